"""examples/release_checkpoints.py end to end: tiny stand-ins under the real repo ids in an offline HF cache, converted,
verified, carded and "pushed" to a local folder; the pushed folders load with the Auto classes."""

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

# SentencePiece tokenizers (tokenizer.model) need the `conversion` extra: sentencepiece + protobuf.
pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
import torch
from huggingface_hub import ModelCard

from helpers.hub_cache import populate_hf_cache
from llava_hf import LlavaHfForConditionalGeneration, LlavaHfProcessor
from llava_hf.testing import make_image

TESTS_DIR = Path(__file__).parents[1]
SCRIPT = TESTS_DIR.parent / "examples" / "release_checkpoints.py"
sys.path.insert(0, str(TESTS_DIR / "assets"))
import make_original_checkpoints  # noqa: E402

V1_REPO = "liuhaotian/llava-llama-2-13b-chat-lightning-preview"


def load_release_script():
    spec = importlib.util.spec_from_file_location("release_checkpoints", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """Tiny stand-ins in the original layouts, stored in an HF cache under the published repo ids."""
    root = tmp_path_factory.mktemp("release")
    cache = root / "hub_cache"
    tower = make_original_checkpoints.make_vision_tower(root / "clip")
    for repo_id in ("openai/clip-vit-large-patch14-336", "openai/clip-vit-large-patch14"):
        populate_hf_cache(tower, repo_id, cache)
    make = make_original_checkpoints.make_original
    stand_ins = {
        "liuhaotian/llava-v1.5-7b": make(
            root / "v15-7b", "openai/clip-vit-large-patch14-336", "lmsys/vicuna-7b-v1.5", seed=10
        ),
        "liuhaotian/llava-v1.5-13b": make(
            root / "v15-13b",
            "openai/clip-vit-large-patch14-336",
            "lmsys/vicuna-13b-v1.5",
            seed=20,
            file_format="safetensors",
        ),
        V1_REPO: make(
            root / "v1",
            "openai/clip-vit-large-patch14",
            "meta-llama/Llama-2-13b-chat-hf",
            seed=11,
            projector_type="linear",
            image_aspect_ratio=None,  # v1 configs predate the field: "square"
            num_shards=2,
        ),
    }
    for repo_id, folder in stand_ins.items():
        populate_hf_cache(folder, repo_id, cache)
    return {"root": root, "cache": cache, "tower": tower}


@pytest.fixture(scope="module")
def released(hub_cache):
    """Run the script as a user would, offline against the cache, pushing to a local folder."""
    root = hub_cache["root"]
    env = dict(os.environ, HF_HUB_CACHE=str(hub_cache["cache"]), HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf_home"))
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--org", "test-org", "--push_to_folder", str(root / "pushed")],
        env=env,
        capture_output=True,
        text=True,
        cwd=root,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return {"folder": root / "pushed", "stdout": result.stdout}


def test_all_three_releases_are_verified_and_pushed_as_complete_folders(released):
    folder = released["folder"]
    assert sorted(path.name for path in folder.iterdir()) == [
        "llava-v1-llama-2-13b-chat",
        "llava-v1.5-13b",
        "llava-v1.5-7b",
    ]  # no staging leftovers
    for name in ("llava-v1.5-7b", "llava-v1.5-13b", "llava-v1-llama-2-13b-chat"):
        assert f"{name}: verified, max |Δlogit| = 0" in released["stdout"]
        files = {path.name for path in (folder / name).iterdir()}
        assert {
            "config.json",
            "model.safetensors",
            "processor_config.json",
            "tokenizer.json",
            "chat_template.jinja",
            "generation_config.json",
            "README.md",
        } <= files, name
        # loadable without llava_hf: transformers' built-in format for mlp2x_gelu, the code for the linear projector
        model_type = json.loads((folder / name / "config.json").read_text())["model_type"]
        linear = name == "llava-v1-llama-2-13b-chat"
        assert (model_type, "modeling_llava.py" in files) == (("llava_hf", True) if linear else ("llava", False)), name
        # readable like any folder the user creates (mkdtemp staging is 0700, safetensors writes 0600)
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o777 & ~umask
        assert stat.S_IMODE((folder / name / "model.safetensors").stat().st_mode) == 0o666 & ~umask


@pytest.mark.parametrize("size, gqa, mme", [("7b", "62.0", "1510.7"), ("13b", "63.3", "1531.3")])
def test_v15_cards_carry_the_published_numbers_labelled_as_the_authors(released, size, gqa, mme):
    card = ModelCard.load(released["folder"] / f"llava-v1.5-{size}" / "README.md")
    assert card.data.license == "llama2"
    assert card.data.base_model == [f"liuhaotian/llava-v1.5-{size}"]
    text = card.text
    assert "Numbers published by the original authors (Liu, Li, Li, Lee: Improved Baselines" in text
    assert "not re-measured on this conversion" in text
    assert f"| GQA | {gqa} | original authors (LLaVA-1.5 paper) |" in text
    assert f"| MME | {mme} | original authors (LLaVA-1.5 paper) |" in text
    assert text.count("| original authors (LLaVA-1.5 paper) |") == 11
    assert f'from_pretrained("test-org/llava-v1.5-{size}")' in text and "trust_remote_code=True" not in text
    assert "import llava_hf" not in text and 'backend="pil"' in text
    assert f"- source: `liuhaotian/llava-v1.5-{size}`" in text and "- source_revision: `" in text
    assert "initialised to the mean of the existing rows" in text
    assert "max |Δlogit| = 0 over" in text and "token ids identical: True" in text
    assert "| Chat template | `vicuna_v1` |" in text and "`lmsys/vicuna-" in text
    assert "| 2 (instruction tuning) | llava_v1_5_mix665k | projector + LLM | 128 | 2e-5 | 1 | vicuna_v1 |" in text


def test_v1_card_records_no_numbers_it_was_not_given(released):
    text = (released["folder"] / "llava-v1-llama-2-13b-chat" / "README.md").read_text()
    assert "No evaluation results recorded for this checkpoint." in text
    assert "original authors (LLaVA-1.5 paper)" not in text
    assert "| Projector | `linear` |" in text and "`square`: CLIP resize" in text
    assert "trust_remote_code=True" in text and "import llava_hf" not in text
    assert "| Chat template | `llava_llama_2` |" in text and f"- source: `{V1_REPO}`" in text


@pytest.mark.parametrize(
    "name, projector_type, aspect, template_start",
    [
        ("llava-v1.5-7b", "mlp2x_gelu", "pad", "USER: <image>\n"),
        ("llava-v1-llama-2-13b-chat", "linear", "square", "[INST] <<SYS>>\n"),
    ],
)
def test_pushed_folders_load_into_llava_hf(released, name, projector_type, aspect, template_start):
    folder = released["folder"] / name
    model, info = LlavaHfForConditionalGeneration.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert (model.config.projector_type, model.config.image_aspect_ratio) == (projector_type, aspect)
    processor = LlavaHfProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert template_start in prompt
    inputs = processor(images=make_image(3), text=prompt, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs.to(model.dtype), max_new_tokens=2, do_sample=False)
    assert generated.shape == (1, inputs.input_ids.shape[1] + 2)


def test_upload_path_failures_and_source_overrides(hub_cache, tmp_path, monkeypatch, capsys):
    """`--org` without --push_to_folder uploads through HfApi (a local stand-in here); a bad source fails alone."""
    import huggingface_hub

    from llava_hf.conversion import ConversionError

    tower = hub_cache["tower"]
    good = make_original_checkpoints.make_original(tmp_path / "good", tower, "lmsys/vicuna-7b-v1.5", seed=10)
    bad = make_original_checkpoints.make_original(tmp_path / "bad", tower, "lmsys/vicuna-13b-v1.5", seed=20)
    config = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**config, "image_aspect_ratio": "anyres_max_9"}))
    uploads = {}

    class LocalHub:
        def create_repo(self, repo_id, private=False, exist_ok=False):
            assert exist_ok and private

        def upload_folder(self, repo_id, folder_path, commit_message):
            uploads[repo_id] = ({path.name for path in Path(folder_path).iterdir()}, commit_message)
            card = (Path(folder_path) / "README.md").read_text()
            assert "| GQA | 62.0 | original authors (LLaVA-1.5 paper) |" in card
            return type("Commit", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/0"})()

    monkeypatch.setattr(huggingface_hub, "HfApi", LocalHub)
    script = load_release_script()
    work_dir = tmp_path / "work"
    argv = ["--org", "o", "--private", "--work_dir", str(work_dir)]
    argv += [
        "--models",
        "llava-v1.5-7b",
        "llava-v1.5-13b",
        "--sources",
        f"llava-v1.5-7b={good}",
        f"llava-v1.5-13b={bad}",
    ]
    assert script.main(argv) == 1
    output = capsys.readouterr()
    assert "llava-v1.5-7b: released to https://huggingface.co/o/llava-v1.5-7b/commit/0" in output.out
    assert "llava-v1.5-13b: FAILED: image_aspect_ratio='anyres_max_9' is not supported" in output.err
    files, message = uploads["o/llava-v1.5-7b"]
    assert list(uploads) == ["o/llava-v1.5-7b"] and message == f"llava-v1.5-7b: converted from {good} with llava_hf"
    assert "model.safetensors" in files and "modeling_llava.py" not in files
    assert list(work_dir.iterdir()) == []  # converted copies are removed after upload or failure

    assert script.main(["--org", "o", "--models", "llava-v2"]) == 2
    assert "unknown release(s) ['llava-v2']" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="expected NAME=REPO_OR_FOLDER"):
        script.main(["--org", "o", "--sources", "llava-v2=x/y"])
    (tmp_path / "pushed" / "llava-v1.5-7b").mkdir(parents=True)
    with pytest.raises(ConversionError, match="already exists"):
        script.release_one(
            "llava-v1.5-7b",
            script.RELEASES["llava-v1.5-7b"],
            str(good),
            script.ReleaseArguments(org="o", push_to_folder=str(tmp_path / "pushed")),
            work_dir,
        )
