"""The consumer environment: a second Python with plain transformers, torch, TRL and lmms-eval and no llava_hf
(`.ci/run` builds it and exports its interpreter as LLAVA_HF_CONSUMER_PYTHON). Tests write folders with llava_hf in
the test process, then run a client script from `tests/consumers/clients/` with that interpreter, as a user who never
installed llava_hf would.

Under CI (LLAVA_HF_CI=1) a missing consumer environment fails the test; elsewhere it skips with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.processes import run_to_exit

CLIENTS = Path(__file__).resolve().parents[1] / "consumers" / "clients"
REAL_SHAPED = Path(__file__).resolve().parents[1] / "assets" / "real_shaped"
QUESTION = "What is in the picture?"


def consumer_python() -> str:
    """The consumer interpreter, checked once to be unable to import llava_hf."""
    python = os.environ.get("LLAVA_HF_CONSUMER_PYTHON")
    if not python:
        reason = "LLAVA_HF_CONSUMER_PYTHON is not set: the consumer environment (no llava_hf) is built by .ci/run"
        if os.environ.get("LLAVA_HF_CI") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    probe = run_to_exit([python, "-c", "import llava_hf"], env=consumer_environment(), cwd="/")
    assert probe.returncode != 0 and "No module named 'llava_hf'" in probe.stderr, (
        f"{python} can import llava_hf: the consumer environment must not have it"
    )
    return python


def consumer_environment() -> dict[str, str]:
    """The test's environment without anything that would put this checkout on the consumer's path."""
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    environment.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HF_DATASETS_OFFLINE="1")
    return environment


def run_client(name: str, *arguments, cwd: Path) -> dict:
    """Run `clients/<name>.py` with the consumer Python in `cwd`; returns the JSON object it prints last."""
    result = run_to_exit(
        [consumer_python(), str(CLIENTS / f"{name}.py"), *map(str, arguments)], env=consumer_environment(), cwd=cwd
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_consumer_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """A console script of the consumer environment (e.g. `trl`), run to exit."""
    executable = Path(consumer_python()).parent / command[0]
    return run_to_exit([str(executable), *command[1:]], env=consumer_environment(), cwd=cwd)


def write_images(folder: Path) -> dict[str, Path]:
    """Real-shaped test images as files: wide and tall RGB, greyscale, and a 16-bit greyscale PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {
        "wide": Image.fromarray(rng.integers(0, 256, (40, 120, 3), dtype=np.uint8)),
        "tall": Image.fromarray(rng.integers(0, 256, (110, 36, 3), dtype=np.uint8)),
        "greyscale": Image.fromarray(rng.integers(0, 256, (50, 64), dtype=np.uint8)),
        "16-bit": Image.fromarray(rng.integers(0, 65536, (48, 56), dtype=np.uint16)),
    }
    paths = {}
    for name, image in images.items():
        paths[name] = folder / f"{name}.png"
        image.save(paths[name])
    assert Image.open(paths["16-bit"]).mode == "I;16"
    return paths


def write_checkpoint(folder: Path):
    """A tiny LLaVA-1.5 from the real-shaped CLIP and Vicuna parts (tokenizer without `<image>` or pad), saved by
    llava_hf with its default arguments; returns `(model, processor)`."""
    import torch

    from llava_hf.training import build_from_parts

    model, processor = build_from_parts(
        str(REAL_SHAPED / "clip-vit-large-patch14-336"), str(REAL_SHAPED / "vicuna-7b-v1.5"), chat_template="vicuna_v1"
    )
    torch.manual_seed(0)
    for parameter in model.model.multi_modal_projector.parameters():  # large enough that answers depend on the image
        parameter.data.normal_(0, 0.5)
    model.generation_config.max_new_tokens = 8
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


def export_checkpoint(source: Path, destination: Path) -> Path:
    """`llava-hf export --to transformers SOURCE DESTINATION`, the command users run."""
    command = [sys.executable, "-m", "llava_hf.cli", "export", "--to", "transformers", str(source), str(destination)]
    result = run_to_exit(command)
    assert result.returncode == 0, result.stderr
    return destination


def push_checkpoint(source: Path, destination: Path) -> Path:
    """The folder `push_to_hub` uploads with default arguments (`prepare_for_hub`)."""
    from llava_hf.conversion.hub import prepare_for_hub

    shutil.copytree(source, destination)
    return prepare_for_hub(destination, "org/tiny-llava")


def llava_hf_reference(folder: Path, image_paths: dict[str, Path], max_new_tokens: int = 8) -> dict[str, dict]:
    """llava_hf's own inference on each image with QUESTION: prompt ids, pixel values, greedy new tokens and text."""
    import torch

    from llava_hf.evaluation.generation import load_image
    from llava_hf.utils.loading import load_checkpoint

    model, processor = load_checkpoint(str(folder), device="cpu", dtype="float32")
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    reference = {}
    for name, path in image_paths.items():
        inputs = processor(images=load_image(path), text=prompt, return_tensors="pt")
        with torch.inference_mode():
            output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        new_tokens = output[0, inputs["input_ids"].shape[1] :]
        reference[name] = {
            "input_ids": inputs["input_ids"][0].tolist(),
            "pixel_values": inputs["pixel_values"],
            "new_tokens": new_tokens.tolist(),
            "text": processor.tokenizer.decode(new_tokens, skip_special_tokens=True),
        }
    return reference


@pytest.fixture(scope="module", name="written")
def written_folders(tmp_path_factory):
    """What llava_hf writes, once per module: the saved checkpoint, the folder `push_to_hub` uploads, the exported
    folder, the test images, and llava_hf's own inference on each image (16-bit: see `test_transformers_clients`)."""
    consumer_python()  # skip or fail before writing anything
    root = tmp_path_factory.mktemp("written")
    write_checkpoint(root / "saved")
    folders = {
        "pushed": push_checkpoint(root / "saved", root / "pushed"),
        "exported": export_checkpoint(root / "saved", root / "exported"),
    }
    images = write_images(root / "images")
    reference = llava_hf_reference(root / "saved", images)
    clipped = root / "images" / "16-bit-clipped.png"
    Image.open(images["16-bit"]).convert("RGB").save(clipped)
    reference["16-bit"] = llava_hf_reference(root / "saved", {"16-bit": clipped})["16-bit"] | {
        "scaled_pixel_values": reference["16-bit"]["pixel_values"]
    }
    return root, folders, images, reference
