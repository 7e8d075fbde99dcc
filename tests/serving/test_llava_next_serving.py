"""LLaVA-1.6 (AnyRes) behind the OpenAI-compatible server: several image parts in one message, requests whose images
have different tile counts batched into one `generate`, answers equal to direct generation; and `llava-hf generate`
on a saved 1.6 checkpoint (what `load_checkpoint` gives evaluate / serve / chat)."""

import concurrent.futures
import json
import subprocess
import sys
import urllib.request

import openai
import pytest

from helpers.serving import data_url, png_bytes
from llava_hf.serving.generate_command import answer
from llava_hf.serving.inference import SamplingArguments
from llava_hf.serving.server import ServeArguments, ServerThread
from llava_hf.testing import make_image, make_tiny_next_model, make_tiny_next_processor

SIZES = [(40, 48), (100, 20), (20, 100), (64, 64)]  # (width, height): 5, 4, 4 and 5 tiles, 72/42/52/88 tokens


@pytest.fixture(scope="module")
def tiny_next():
    model, processor = make_tiny_next_model(), make_tiny_next_processor(chat_template="vicuna_v1")
    processor.tokenizer.padding_side = "left"
    return model, processor


def request(seeds: list[int]) -> list[dict]:
    """One user message: an image part per seed (interleaved with text), then the question."""
    content = []
    for number, seed in enumerate(seeds):
        content += [
            {"type": "text", "text": f"Picture {number + 1}:"},
            {"type": "image_url", "image_url": {"url": data_url(png_bytes(seed, SIZES[seed]))}},
        ]
    return [{"role": "user", "content": content + [{"type": "text", "text": "Which is wider?"}]}]


def direct(model, processor, seeds: list[int]) -> str:
    content = []
    for number, _ in enumerate(seeds):
        content += [{"type": "text", "text": f"Picture {number + 1}:"}, {"type": "image"}]
    messages = [{"role": "user", "content": content + [{"type": "text", "text": "Which is wider?"}]}]
    images = [make_image(seed, SIZES[seed]) for seed in seeds]
    return answer(model, processor, messages, images, SamplingArguments(max_new_tokens=6, temperature=0.0))


def test_several_images_per_message_and_mixed_tile_counts_in_one_batch(tiny_next):
    settings = ServeArguments(port=0, max_images_per_request=3, max_prompt_tokens=600, batch_wait_ms=1500)
    cases = [[0, 1], [2], [3, 0, 2]]
    expected = [direct(*tiny_next, seeds) for seeds in cases]
    with ServerThread(*tiny_next, settings, "tiny-llava-next") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)

        def ask(seeds):
            reply = client.chat.completions.create(
                model="tiny-llava-next", messages=request(seeds), max_tokens=6, temperature=0
            )
            return reply.choices[0].message.content

        with concurrent.futures.ThreadPoolExecutor(len(cases)) as pool:  # arrive together: batched
            answers = list(pool.map(ask, cases))
        with urllib.request.urlopen(url + "/health", timeout=60) as response:
            health = json.loads(response.read())
    assert answers == expected
    assert health["largest_recent_batch"] > 1  # images with different tile counts shared a generate call


@pytest.mark.slow
def test_generate_command_answers_with_a_saved_llava_next(tmp_path, tiny_next):
    model, processor = tiny_next
    folder = tmp_path / "tiny-llava-next"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    image = tmp_path / "photo.png"
    make_image(1, SIZES[1]).save(image)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava_hf.cli",
            "generate",
            "--model",
            str(folder),
            "--image",
            str(image),
            "--prompt",
            "What is it?",
            "--max_new_tokens",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    expected = answer(
        model, processor, messages, [make_image(1, SIZES[1])], SamplingArguments(max_new_tokens=5, temperature=0.0)
    )
    assert result.stdout.strip() == expected.strip()


@pytest.mark.slow
def test_evaluate_command_runs_a_saved_llava_next_batched(tmp_path, tiny_next):
    """`llava-hf evaluate` (POPE, batches of 5 images of different sizes) on a 1.6 checkpoint, answers as direct."""
    from pathlib import Path

    from llava_hf.cli import main

    pope = Path(__file__).resolve().parents[1] / "assets" / "evaluation" / "pope"
    model, processor = tiny_next
    folder = tmp_path / "tiny-llava-next"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    arguments = ["evaluate", "--task", "pope", "--model", str(folder), "--data", str(pope)]
    arguments += ["--image-folder", str(pope / "images"), "--pope-splits", "popular", "--output-dir", str(tmp_path)]
    arguments += ["--max-new-tokens", "3", "--batch-size", "5", "--no-progress"]
    assert main(arguments) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["num_answered"] > 0 and "f1" in results["metrics"]
