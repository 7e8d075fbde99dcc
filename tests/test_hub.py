"""Checkpoints on disk and on the (offline) Hub: save/load, Auto classes, built-in interop, pipeline, push_to_hub."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    pipeline,
)
from transformers import LlavaForConditionalGeneration as BuiltinLlava

from helpers.hub_cache import populate_hf_cache
from llava_hf import LlavaHfConfig, LlavaHfForConditionalGeneration, LlavaHfModel, LlavaHfProcessor
from llava_hf.testing import make_image, make_tiny_model, make_tiny_processor

TESTS_DIR = Path(__file__).parent
MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]


@pytest.fixture
def checkpoint(tmp_path, model, processor):
    folder = tmp_path / "tiny-llava"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def test_saved_files_name_only_builtin_classes(checkpoint):
    """A model transformers' built-in llava can express saves in its format: nothing names a llava_hf class."""
    config = json.loads((checkpoint / "config.json").read_text())
    processor_config = json.loads((checkpoint / "processor_config.json").read_text())
    assert config["model_type"] == "llava"
    assert config["architectures"] == ["LlavaForConditionalGeneration"]
    assert processor_config["processor_class"] == "LlavaProcessor"
    assert processor_config["image_processor"]["image_processor_type"] == "LlavaImageProcessor"
    # what the built-in processor counts 4 x 4 + 1 - 1 = 16 image tokens from (the tiny model's image_seq_length)
    assert (processor_config["patch_size"], processor_config["num_additional_image_tokens"]) == (8, 1)
    assert processor_config["vision_feature_select_strategy"] == "default"
    for path in checkpoint.iterdir():
        if path.suffix in (".json", ".jinja"):
            assert "LlavaHf" not in path.read_text() and "llava_hf" not in path.read_text(), path.name
    assert (checkpoint / "chat_template.jinja").read_text().startswith("{#- LLaVA-1.5's `vicuna_v1`")


def test_auto_classes_give_the_builtin_and_llava_hf_classes_give_ours(checkpoint, model, processor):
    from transformers import LlavaConfig, LlavaModel
    from transformers import LlavaProcessor as BuiltinLlavaProcessor

    # With llava_hf imported, the Auto classes still give transformers' own classes for a built-in folder.
    assert type(AutoConfig.from_pretrained(checkpoint)) is LlavaConfig
    builtin, info = AutoModelForImageTextToText.from_pretrained(checkpoint, output_loading_info=True)
    assert type(builtin) is BuiltinLlava and not info["missing_keys"] and not info["unexpected_keys"]
    assert type(AutoModelForMultimodalLM.from_pretrained(checkpoint)) is BuiltinLlava
    assert type(AutoModel.from_pretrained(checkpoint)) is LlavaModel
    assert type(AutoProcessor.from_pretrained(checkpoint)) is BuiltinLlavaProcessor

    # llava_hf's classes read it into ours, with our extras.
    assert type(LlavaHfConfig.from_pretrained(checkpoint)) is LlavaHfConfig
    reloaded, info = LlavaHfForConditionalGeneration.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert reloaded.config.projector_type == "mlp2x_gelu" and reloaded.config.image_aspect_ratio == "pad"
    assert reloaded.config.architectures == ["LlavaHfForConditionalGeneration"]
    assert type(LlavaHfModel.from_pretrained(checkpoint)) is LlavaHfModel
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name
    # the frozen vision tower stays frozen after loading
    assert not any(p.requires_grad for p in reloaded.model.vision_tower.parameters())

    loaded_processor = LlavaHfProcessor.from_pretrained(checkpoint)
    assert loaded_processor.image_seq_length == processor.image_seq_length
    assert loaded_processor.chat_template == processor.chat_template
    image = make_image(3)
    text = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    before, after = (
        processor(images=image, text=text, return_tensors="pt"),
        loaded_processor(images=image, text=text, return_tensors="pt"),
    )
    assert torch.equal(before.input_ids, after.input_ids)
    torch.testing.assert_close(before.pixel_values, after.pixel_values)
    expected = model.generate(**before, do_sample=False)
    assert torch.equal(expected, reloaded.generate(**after, do_sample=False))
    assert torch.equal(expected, builtin.generate(**after, do_sample=False))


def test_loading_the_builtin_format_into_ours_warns_about_nothing(checkpoint, capfd):
    import transformers

    transformers.logging.set_verbosity_warning()
    LlavaHfConfig.from_pretrained(checkpoint)
    LlavaHfForConditionalGeneration.from_pretrained(checkpoint)
    LlavaHfProcessor.from_pretrained(checkpoint)
    assert "model of type" not in capfd.readouterr().err


def test_disk_layout_is_builtin_llava_layout_and_loads_both_ways(checkpoint, model, tmp_path):
    with safe_open(checkpoint / "model.safetensors", "pt") as handle:
        keys = set(handle.keys())
    assert "language_model.model.embed_tokens.weight" in keys and "language_model.lm_head.weight" in keys
    assert any(key.startswith("vision_tower.") for key in keys)
    assert "multi_modal_projector.linear_2.weight" in keys

    # ours -> built-in: the built-in class reads our folder as it is
    builtin, info = BuiltinLlava.from_pretrained(checkpoint, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]

    # built-in -> ours: a folder saved by the built-in class loads into ours without missing/unexpected keys
    saved_by_builtin = tmp_path / "saved-by-builtin"
    builtin.save_pretrained(saved_by_builtin)
    with safe_open(saved_by_builtin / "model.safetensors", "pt") as handle:
        assert set(handle.keys()) == keys  # the same on-disk layout
    ours, info = LlavaHfForConditionalGeneration.from_pretrained(saved_by_builtin, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, ours.state_dict()[name]), name


def test_pipeline_chat_in_text_out(checkpoint):
    pipe = pipeline("image-text-to-text", model=str(checkpoint))
    messages = [
        {"role": "user", "content": [{"type": "image", "image": make_image(1)}, {"type": "text", "text": "What?"}]}
    ]
    outputs = pipe(text=messages, max_new_tokens=4, return_full_text=False)
    assert isinstance(outputs[0]["generated_text"], str)
    batched = pipe(text=[messages, messages], max_new_tokens=2, batch_size=2, return_full_text=False)
    assert len(batched) == 2


def test_bf16_save_reloads_as_bf16(tmp_path, model):
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    assert LlavaHfForConditionalGeneration.from_pretrained(tmp_path).dtype == torch.bfloat16


OFFLINE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    import llava_hf
    from huggingface_hub import constants
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline
    from PIL import Image
    assert constants.HF_HUB_OFFLINE
    repo = sys.argv[1]
    model = AutoModelForImageTextToText.from_pretrained(repo)
    processor = AutoProcessor.from_pretrained(repo)
    pipe = pipeline("image-text-to-text", model=repo)
    image = Image.new("RGB", (40, 30), (200, 10, 10))
    messages = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What?"}]}]
    print(type(model).__name__, type(processor).__name__, repr(pipe(text=messages, max_new_tokens=2)[0]["generated_text"][-1]))
    ours = llava_hf.LlavaHfForConditionalGeneration.from_pretrained(repo), llava_hf.LlavaHfProcessor.from_pretrained(repo)
    print("ours", *(type(item).__name__ for item in ours))
    try:
        AutoModelForImageTextToText.from_pretrained("tiny-org/not-in-cache")
    except OSError as error:
        print("uncached:", type(error).__name__)
    """
)


def run_offline(script: str, cache: Path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", HF_HOME=str(cache.parent / "hf_home"))
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, cwd=cache.parent
    )


def test_from_pretrained_by_repo_id_from_offline_cache(checkpoint, tmp_path):
    cache = tmp_path / "hub_cache"
    populate_hf_cache(checkpoint, "tiny-org/llava-tiny", cache)
    result = run_offline(OFFLINE_SCRIPT, cache, "tiny-org/llava-tiny")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LlavaForConditionalGeneration LlavaProcessor" in result.stdout
    assert "ours LlavaHfForConditionalGeneration LlavaHfProcessor" in result.stdout
    assert "uncached: OSError" in result.stdout


PUSH_SCRIPT = textwrap.dedent(
    """
    import sys, hashlib, shutil, tempfile
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    import transformers.utils.hub as transformers_hub
    from huggingface_hub import HfApi
    from helpers.hub_cache import populate_hf_cache
    import llava_hf
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from huggingface_hub import constants

    class CacheWritingHub:
        '''Stands in for HfApi: each commit is written into the local HF cache, so push -> load runs offline.'''
        def __init__(self): self.commits = []
        def create_repo(self, repo_id, **kwargs):
            return type("RepoUrl", (), {"repo_id": repo_id})()
        def create_commit(self, repo_id, operations, commit_message="", **kwargs):
            with tempfile.TemporaryDirectory() as staging:
                snapshot = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--")) / "snapshots"
                previous = sorted(snapshot.glob("*"))
                if previous: shutil.copytree(previous[0], staging, dirs_exist_ok=True, symlinks=False)
                for operation in operations:
                    target = Path(staging) / operation.path_in_repo
                    target.parent.mkdir(parents=True, exist_ok=True)
                    content = operation.path_or_fileobj
                    target.write_bytes(Path(content).read_bytes() if isinstance(content, (str, Path)) else content if isinstance(content, bytes) else content.read())
                if previous: shutil.rmtree(previous[0])
                populate_hf_cache(Path(staging), repo_id, Path(constants.HF_HUB_CACHE))
            self.commits.append(sorted(op.path_in_repo for op in operations))
            return type("CommitInfo", (), {"commit_url": "local", "oid": "0" * 40, "pr_url": None})()
        def __getattr__(self, name):
            return getattr(HfApi(), name)

    hub = CacheWritingHub()
    transformers_hub.hf_api = lambda *a, **k: hub
    transformers_hub.create_and_tag_model_card = lambda *a, **k: type("Card", (), {"save": lambda self, path: Path(path).write_text("card")})()
    folder = sys.argv[1]
    llava_hf.LlavaHfForConditionalGeneration.from_pretrained(folder).push_to_hub("me/pushed")
    llava_hf.LlavaHfProcessor.from_pretrained(folder).push_to_hub("me/pushed")
    model = AutoModelForImageTextToText.from_pretrained("me/pushed")
    processor = AutoProcessor.from_pretrained("me/pushed")
    print("commits", hub.commits)
    print("loaded", type(model).__name__, type(processor).__name__)
    """
)


def test_push_to_hub_then_load_by_repo_id(checkpoint, tmp_path):
    cache = tmp_path / "hub_cache"
    cache.mkdir()
    result = run_offline(PUSH_SCRIPT, cache, str(checkpoint), str(TESTS_DIR))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model.safetensors" in result.stdout and "processor_config.json" in result.stdout
    # pushed by llava_hf's classes, loaded by plain transformers' Auto classes as its own
    assert "loaded LlavaForConditionalGeneration LlavaProcessor" in result.stdout


def test_processor_with_square_images_saves_its_mode(tmp_path, tokenizer):
    processor = make_tiny_processor(tokenizer, image_aspect_ratio="square", chat_template="plain")
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert reloaded.image_processor.do_pad is False
    assert "stage-1 `plain`" in reloaded.chat_template


def test_a_model_the_builtin_cannot_express_keeps_the_llava_hf_type(tmp_path, processor):
    """A linear projector is out of the built-in's reach: the llava_hf format, which `import llava_hf` registers with
    the Auto classes (and which is shared with its code, see conversion/hub.py)."""
    from llava_hf.testing import make_tiny_config

    model = make_tiny_model(make_tiny_config(projector_type="linear"))
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("llava_hf", ["LlavaHfForConditionalGeneration"])
    assert type(AutoConfig.from_pretrained(tmp_path)) is LlavaHfConfig
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert type(reloaded) is LlavaHfForConditionalGeneration and reloaded.config.projector_type == "linear"
    assert type(AutoModel.from_pretrained(tmp_path)) is LlavaHfModel
