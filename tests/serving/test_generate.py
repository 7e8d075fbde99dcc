"""`llava-hf generate` and the shared loading code: exact greedy answers, Hub repo ids, errors that name the fix."""

import importlib.util
import subprocess
import sys

import pytest

from helpers.hub_cache import populate_hf_cache
from helpers.serving import checkpoint, reference_answer, subprocess_env, tiny  # noqa: F401  (fixtures)
from llava_hf.serving import generate_command as generate
from llava_hf.serving.inference import ModelArguments, SamplingArguments, load_model_and_processor
from llava_hf.testing import make_image


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    make_image(1).save(path)
    return path


def test_generate_prints_the_greedy_answer(checkpoint, tiny, image_file, capsys):  # noqa: F811
    code = generate.main(
        ["--model", str(checkpoint), "--image", str(image_file), "--prompt", "What is it?", "--max_new_tokens", "12"]
    )
    assert code == 0
    expected = reference_answer(*tiny, "What is it?", seed=1, max_new_tokens=12)
    assert capsys.readouterr().out == expected + "\n"


def test_generate_text_only(checkpoint, tiny, capsys):  # noqa: F811
    assert generate.main(["--model", str(checkpoint), "--prompt", "Hello there", "--max_new_tokens", "6"]) == 0
    assert capsys.readouterr().out == reference_answer(*tiny, "Hello there", seed=None, max_new_tokens=6) + "\n"


def test_loaded_checkpoint_is_ready_for_batched_inference(checkpoint):  # noqa: F811
    model, processor = load_model_and_processor(ModelArguments(model=str(checkpoint), dtype="float32", device="cpu"))
    assert not model.training
    assert processor.tokenizer.padding_side == "left"
    assert processor.chat_template.startswith("{#- LLaVA-1.5's `vicuna_v1`")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "hi", "--image", "/nonexistent/photo.png"], "image file '/nonexistent/photo.png' does not exist"),
        ([], "--prompt is required"),
        (["--prompt", "hi", "--dtype", "float8"], "--dtype 'float8' is not one of auto"),
        (["--prompt", "hi", "--load_in_4bit", "--load_in_8bit"], "choose one of --load_in_4bit and --load_in_8bit"),
        (["--prompt", "hi", "--temperature", "-1"], "--temperature must be >= 0"),
    ],
)
def test_generate_errors_name_the_fix(checkpoint, extra, message, capsys):  # noqa: F811
    assert generate.main(["--model", str(checkpoint), *extra]) == 2
    assert message in capsys.readouterr().err


def test_missing_checkpoint_folder_is_named(capsys):
    assert generate.main(["--model", "./no/such/folder", "--prompt", "hi"]) == 2
    assert "is not a folder; give a checkpoint folder or a Hub repo id" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_quantization_without_bitsandbytes_says_what_to_install(checkpoint, capsys):  # noqa: F811
    assert generate.main(["--model", str(checkpoint), "--prompt", "hi", "--load_in_4bit"]) == 2
    assert "--load_in_4bit needs bitsandbytes: `pip install bitsandbytes`" in capsys.readouterr().err


def test_sampling_arguments_validate():
    with pytest.raises(ValueError, match="top_p must be in"):
        SamplingArguments(top_p=0)


def test_generate_cli_loads_a_hub_repo_id_offline(checkpoint, tiny, image_file, tmp_path):  # noqa: F811
    """The real console entry point in a subprocess, loading `org/name` from a populated offline HF cache."""
    cache = tmp_path / "hub"
    populate_hf_cache(checkpoint, "tiny-org/llava-tiny", cache)
    command = [sys.executable, "-m", "llava_hf.cli", "generate", "--model", "tiny-org/llava-tiny"]
    command += ["--image", str(image_file), "--prompt", "What is it?", "--max_new_tokens", "12"]
    result = subprocess.run(
        command, capture_output=True, text=True, env=subprocess_env(HF_HUB_CACHE=str(cache)), timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout == reference_answer(*tiny, "What is it?", seed=1, max_new_tokens=12) + "\n"
