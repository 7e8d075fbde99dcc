"""4-bit and 8-bit inference on CPU (bitsandbytes runs NF4 and LLM.int8 there): `generate`, `chat`, `serve` and
`evaluate` load the tiny checkpoint with `--load_in_4bit` / `--load_in_8bit`, quantize only the language model, and
answer exactly what the same quantized model answers in process."""

import json
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import torch

from helpers.serving import image_message, start_server, stop_server, subprocess_env
from llava_hf.serving.generate_command import answer, user_message
from llava_hf.serving.inference import ModelArguments, SamplingArguments, load_model_and_processor
from llava_hf.testing import make_image, make_tiny_model, make_tiny_processor, make_tiny_quantizable_model

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow  # one `llava-hf` process per command, each importing torch and bitsandbytes

SCIENCEQA = Path(__file__).resolve().parents[1] / "assets" / "evaluation" / "scienceqa"
QUANTIZED_LINEAR = {"4": "Linear4bit", "8": "Linear8bitLt"}
LLAVA_HF = [sys.executable, "-m", "llava_hf.cli"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """The tiny checkpoint with a 64-wide language model (bitsandbytes' CPU 4-bit kernel works in blocks of 64)."""
    folder = tmp_path_factory.mktemp("quantized") / "tiny-llava"
    make_tiny_quantizable_model().save_pretrained(folder)
    make_tiny_processor().save_pretrained(folder)
    return folder


def load_quantized(checkpoint: Path, bits: str):
    flags = {"load_in_4bit": bits == "4", "load_in_8bit": bits == "8"}
    return load_model_and_processor(ModelArguments(model=str(checkpoint), device="cpu", **flags))


def run(*arguments: str) -> subprocess.CompletedProcess:
    result = subprocess.run([*LLAVA_HF, *arguments], capture_output=True, text=True, env=subprocess_env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.parametrize("bits", ["4", "8"])
def test_only_the_language_model_is_quantized(checkpoint, bits):
    model, _ = load_quantized(checkpoint, bits)
    assert type(model.model.language_model.layers[0].mlp.down_proj).__name__ == QUANTIZED_LINEAR[bits]
    assert type(model.model.vision_tower.encoder.layers[0].mlp.fc1) is torch.nn.Linear
    assert type(model.model.multi_modal_projector.linear_2) is torch.nn.Linear
    assert type(model.lm_head) is torch.nn.Linear


@pytest.mark.parametrize("bits", ["4", "8"])
def test_generate_answers_in_4bit_and_8bit_on_cpu(checkpoint, bits, tmp_path):
    make_image(1).save(tmp_path / "photo.png")
    result = run(
        "generate", "--model", str(checkpoint), "--image", str(tmp_path / "photo.png"), "--prompt", "What is it?",
        "--max_new_tokens", "8", "--device", "cpu", f"--load_in_{bits}bit",
    )  # fmt: skip
    model, processor = load_quantized(checkpoint, bits)
    sampling = SamplingArguments(max_new_tokens=8, temperature=0.0)
    expected = answer(model, processor, [user_message("What is it?", with_image=True)], [make_image(1)], sampling)
    assert expected and result.stdout == expected + "\n"


def test_chat_answers_in_8bit_on_cpu(checkpoint, tmp_path):
    make_image(2).save(tmp_path / "photo.png")
    command = [*LLAVA_HF, "chat", "--model", str(checkpoint), "--image", str(tmp_path / "photo.png")]
    command += ["--max_new_tokens", "6", "--device", "cpu", "--load_in_8bit"]
    result = subprocess.run(
        command, input="Describe it.\n/quit\n", capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model, processor = load_quantized(checkpoint, "8")
    sampling = SamplingArguments(max_new_tokens=6, temperature=0.0)
    expected = answer(model, processor, [user_message("Describe it.", with_image=True)], [make_image(2)], sampling)
    assert result.stdout.split("ASSISTANT:")[1].split("\nUSER: ")[0].strip() == expected


def test_serve_answers_in_4bit_on_cpu(checkpoint, tmp_path):
    process, url = start_server(checkpoint, "--device", "cpu", "--load_in_4bit", log_path=tmp_path / "serve.log")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model=str(checkpoint), messages=[image_message("What is it?", seed=3)], max_tokens=6, temperature=0
        )
    finally:
        stop_server(process)
    model, processor = load_quantized(checkpoint, "4")
    sampling = SamplingArguments(max_new_tokens=6, temperature=0.0)
    expected = answer(model, processor, [user_message("What is it?", with_image=True)], [make_image(3)], sampling)
    assert reply.choices[0].message.content == expected


def test_evaluate_runs_in_8bit_on_cpu(checkpoint, tmp_path):
    run(
        "evaluate", "--task", "scienceqa", "--data", str(SCIENCEQA), "--model", str(checkpoint), "--output_dir",
        str(tmp_path / "eval"), "--limit", "2", "--max_new_tokens", "2", "--device", "cpu", "--load_in_8bit",
        "--no_progress",
    )  # fmt: skip
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert results["num_examples"] == results["num_answered"] == 2


def test_4bit_on_cpu_refuses_widths_its_kernel_cannot_run(tmp_path, capsys):
    from llava_hf.serving import generate_command as generate

    make_tiny_model().save_pretrained(tmp_path / "narrow")  # a 32-wide language model
    make_tiny_processor().save_pretrained(tmp_path / "narrow")
    argv = ["--model", str(tmp_path / "narrow"), "--prompt", "hi", "--device", "cpu", "--load_in_4bit"]
    assert generate.main(argv) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error
    last_line = error.strip().splitlines()[-1]  # after the loading progress bars
    assert "multiples of bitsandbytes' block of 64" in last_line and "Use --load_in_8bit" in last_line
