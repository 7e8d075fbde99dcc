"""Export to transformers' built-in llava, import back bit-exact, PEFT adapters, model cards, remote code, offline Hub."""

import filecmp
import json
import sys
import textwrap
from pathlib import Path

import pytest

# SentencePiece tokenizers (tokenizer.model) need the `conversion` extra: sentencepiece + protobuf.
pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration
from transformers import LlavaProcessor as BuiltinLlavaProcessor

from helpers.hub_cache import populate_hf_cache
from helpers.without_llava_hf import run_without_llava_hf
from llava_hf import LlavaHfForConditionalGeneration
from llava_hf.cli import main as cli_main
from llava_hf.conversion import ConversionError, ConvertArguments, convert_checkpoint
from llava_hf.conversion.convert_transformers_checkpoint import export_to_transformers
from llava_hf.conversion.hub import add_remote_code
from llava_hf.conversion.model_card import render_model_card
from llava_hf.testing import make_image, make_tiny_model

TESTS_DIR = Path(__file__).parents[1]
sys.path.insert(0, str(TESTS_DIR / "assets"))
import make_original_checkpoints  # noqa: E402

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A converted original v1.5-style checkpoint (mlp2x_gelu, SentencePiece tokenizer)."""
    root = tmp_path_factory.mktemp("hub")
    tower = make_original_checkpoints.make_vision_tower(root / "clip-tiny")
    base = make_original_checkpoints.make_base_llm(root / "vicuna-tiny")
    stage1 = make_original_checkpoints.make_stage1(root / "stage1", tower, base)
    return convert_checkpoint(stage1, root / "converted").destination


def test_export_loads_in_builtin_llava_and_round_trips_bit_exact(converted, tmp_path):
    assert cli_main(["export", "--to", "transformers", str(converted), str(tmp_path / "hf")]) == 0
    builtin, info = LlavaForConditionalGeneration.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    processor = AutoProcessor.from_pretrained(tmp_path / "hf")
    assert type(processor) is BuiltinLlavaProcessor
    for path in (tmp_path / "hf").iterdir():  # every file names only transformers' own classes
        if path.suffix in (".json", ".jinja"):
            assert "LlavaHf" not in path.read_text() and '"llava_hf"' not in path.read_text(), path.name
    ours = LlavaHfForConditionalGeneration.from_pretrained(converted)
    ours_processor = AutoProcessor.from_pretrained(converted)
    prompt = ours_processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = ours_processor(images=make_image(1), text=prompt, return_tensors="pt")
    builtin_inputs = processor(images=make_image(1), text=prompt, return_tensors="pt")
    assert torch.equal(inputs.input_ids, builtin_inputs.input_ids)
    assert torch.equal(ours(**inputs).logits, builtin(**builtin_inputs).logits)

    back = convert_checkpoint(tmp_path / "hf", tmp_path / "back", ConvertArguments(verify=True))
    assert back.source_format == "transformers" and back.verification["max_abs_logit_diff"] == 0.0
    assert filecmp.cmp(converted / "model.safetensors", tmp_path / "back" / "model.safetensors", shallow=False)
    before, after = (json.loads((folder / "config.json").read_text()) for folder in (converted, tmp_path / "back"))
    assert before == after
    assert (
        AutoProcessor.from_pretrained(tmp_path / "back").tokenizer._tokenizer.pre_tokenizer.prepend_scheme == "always"
    )


def test_a_folder_in_the_llava_hf_format_is_rewritten_for_the_hub_and_export(converted, tmp_path):
    """A folder saved in the `llava_hf` format (the base classes' own save, as older llava_hf versions wrote it) is
    rewritten into the built-in format by `prepare_for_hub` and `export`; the weights stay the same bytes."""
    import shutil

    from transformers import PreTrainedConfig
    from transformers.processing_utils import ProcessorMixin

    from llava_hf import LlavaHfConfig, LlavaHfProcessor
    from llava_hf.conversion.hub import prepare_for_hub

    old = shutil.copytree(converted, tmp_path / "old")
    PreTrainedConfig.save_pretrained(LlavaHfConfig.from_pretrained(converted), old)
    ProcessorMixin.save_pretrained(LlavaHfProcessor.from_pretrained(converted), old)
    assert json.loads((old / "config.json").read_text())["model_type"] == "llava_hf"
    assert json.loads((old / "processor_config.json").read_text())["processor_class"] == "LlavaHfProcessor"

    export_to_transformers(old, tmp_path / "exported")
    prepare_for_hub(old, "org/tiny")
    for folder in (old, tmp_path / "exported"):
        assert json.loads((folder / "config.json").read_text())["model_type"] == "llava"
        assert json.loads((folder / "processor_config.json").read_text())["processor_class"] == "LlavaProcessor"
        assert filecmp.cmp(converted / "model.safetensors", folder / "model.safetensors", shallow=False)
        model, info = LlavaForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
    assert "trust_remote_code" not in (old / "README.md").read_text()


def test_export_refuses_what_the_builtin_cannot_represent(tmp_path, capsys):
    from llava_hf.testing import make_tiny_config, make_tiny_processor

    model = make_tiny_model(make_tiny_config(projector_type="linear"))
    model.save_pretrained(tmp_path / "linear")
    make_tiny_processor().save_pretrained(tmp_path / "linear")
    with pytest.raises(ConversionError, match="projector_type='linear' cannot be represented"):
        export_to_transformers(tmp_path / "linear", tmp_path / "out")
    assert cli_main(["export", str(tmp_path / "linear"), str(tmp_path / "out")]) == 1
    assert not (tmp_path / "out").exists()


def test_peft_lora_adapter_saves_loads_and_merges(converted, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model

    model = LlavaHfForConditionalGeneration.from_pretrained(converted)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)", init_lora_weights=False)
    adapted = get_peft_model(model, lora)
    processor = AutoProcessor.from_pretrained(converted)
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = processor(images=make_image(2), text=prompt, return_tensors="pt")
    with torch.no_grad():
        expected = adapted(**inputs).logits
    adapted.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    reloaded = PeftModel.from_pretrained(
        LlavaHfForConditionalGeneration.from_pretrained(converted), tmp_path / "adapter"
    )
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, expected)
        merged = reloaded.merge_and_unload()
        assert type(merged) is LlavaHfForConditionalGeneration
        torch.testing.assert_close(merged(**inputs).logits, expected, atol=1e-4, rtol=1e-4)


def test_model_card_lists_models_data_stages_evaluation_and_provenance():
    from huggingface_hub import ModelCard

    card = render_model_card(
        repo_id="org/llava-v1.5-7b",
        base_models=["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"],
        datasets=["liuhaotian/LLaVA-Pretrain"],
        stages=[{"stage": "1", "data": "LCS-558K", "trainable": "projector"}],
        evaluation=[{"benchmark": "GQA", "score": 62.0}],
        evaluation_source="published by the original authors (LLaVA-1.5 paper), not re-measured here",
        provenance={"source": "liuhaotian/llava-v1.5-7b", "new_token_init": "rows = mean"},
        license_name="llama2",
    )
    metadata = ModelCard(card).data.to_dict()
    assert (metadata["library_name"], metadata["pipeline_tag"], metadata["license"]) == (
        "transformers",
        "image-text-to-text",
        "llama2",
    )
    assert metadata["base_model"] == ["lmsys/vicuna-7b-v1.5", "openai/clip-vit-large-patch14-336"]
    assert metadata["datasets"] == ["liuhaotian/LLaVA-Pretrain"]
    for text in (
        "- `lmsys/vicuna-7b-v1.5`",
        "| 1 | LCS-558K | projector |",
        "| GQA | 62.0 | published by the original authors",
        'from_pretrained("org/llava-v1.5-7b")',
        "source: `liuhaotian/llava-v1.5-7b`",
        "rows = mean",
        "converted without `--verify`",
        "| License | llama2 |",
        "## Citation",  # the template's own text: the card is rendered through model_card_template.md
    ):
        assert text in card, text
    assert "trust_remote_code=True" not in card and "{{" not in card and "{%" not in card


def test_model_card_details_come_from_config_and_unattributed_numbers_are_refused(converted, tmp_path):
    import shutil

    from llava_hf.conversion.model_card import write_model_card

    folder = shutil.copytree(converted, tmp_path / "card")
    card = (folder / "README.md").read_text()  # written by the conversion
    assert "| Projector | `mlp2x_gelu` |" in card and "16 image tokens" in card
    assert "`pad`: pasted on a square of the mean colour" in card and "| Chat template | `vicuna_v1` |" in card
    # re-rendering with new fields keeps the provenance recorded at conversion time
    write_model_card(folder, repo_id="org/tiny", license_name="apache-2.0", remote_code=True)
    rewritten = (folder / "README.md").read_text()
    assert "initialised to the mean of the existing rows" in rewritten and "| License | apache-2.0 |" in rewritten
    assert "trust_remote_code=True" in rewritten
    with pytest.raises(ValueError, match="says nothing about who measured it"):
        render_model_card(evaluation=[{"benchmark": "GQA", "score": 62.0}])


REMOTE_SCRIPT = textwrap.dedent(
    """
    import sys
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from PIL import Image
    repo = sys.argv[1]
    try:
        AutoModelForImageTextToText.from_pretrained(repo)
    except ValueError as error:
        print("refused without trust_remote_code")
    model = AutoModelForImageTextToText.from_pretrained(repo, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=Image.new("RGB", (40, 30), (9, 99, 200)), text=prompt, return_tensors="pt")
    print(type(model).__name__, type(processor).__name__, model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, -3:].tolist())
    """
)


def test_remote_code_checkpoint_loads_by_repo_id_without_llava_hf(converted, tmp_path):
    folder = tmp_path / "remote"
    import shutil

    shutil.copytree(converted, folder)
    add_remote_code(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "AutoModelForImageTextToText" in config["auto_map"]
    assert (folder / "modeling_llava.py").is_file() and (folder / "README.md").is_file()
    reloaded, info = LlavaHfForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    # a plain save afterwards ships no code: registration was undone
    make_tiny_model().save_pretrained(tmp_path / "plain")
    assert "auto_map" not in json.loads((tmp_path / "plain" / "config.json").read_text())

    cache = tmp_path / "hub_cache"
    populate_hf_cache(folder, "tiny-org/llava-remote", cache)
    stdout = run_without_llava_hf(REMOTE_SCRIPT, tmp_path, "tiny-org/llava-remote", env={"HF_HUB_CACHE": str(cache)})
    assert "refused without trust_remote_code" in stdout
    assert "LlavaHfForConditionalGeneration LlavaHfProcessor" in stdout

    model = LlavaHfForConditionalGeneration.from_pretrained(converted)
    processor = AutoProcessor.from_pretrained(converted)
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]}],
        add_generation_prompt=True,
    )
    from PIL import Image

    inputs = processor(images=Image.new("RGB", (40, 30), (9, 99, 200)), text=prompt, return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=3, do_sample=False)[0, -3:].tolist()
    assert str(expected) in stdout


def test_push_to_hub_uploads_the_folder_with_a_filled_card(converted, tmp_path, monkeypatch):
    import shutil

    import huggingface_hub

    from llava_hf.conversion.hub import push_to_hub

    uploads = []

    class LocalHub:
        """Stands in for HfApi: the upload goes into the HF cache layout under tmp_path."""

        def create_repo(self, repo_id, private=False, exist_ok=False):
            uploads.append(("create", repo_id, private))

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploads.append(("upload", repo_id, commit_message))
            return type(
                "Commit", (), {"commit_url": str(populate_hf_cache(Path(folder_path), repo_id, tmp_path / "c"))}
            )()

    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    folder = shutil.copytree(converted, tmp_path / "to-push")
    url = push_to_hub(
        folder, "org/llava-tiny", base_models=["lmsys/vicuna-7b-v1.5"], datasets=["liuhaotian/LLaVA-Pretrain"]
    )
    assert [entry[0] for entry in uploads] == ["create", "upload"]
    snapshot = Path(url)
    card = (snapshot / "README.md").read_text()
    assert 'from_pretrained("org/llava-tiny")' in card and "- lmsys/vicuna-7b-v1.5" in card
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        p.name for p in snapshot.iterdir()
    }
