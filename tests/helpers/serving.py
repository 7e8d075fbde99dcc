"""Shared pieces for the serving tests: a saved tiny checkpoint, data URLs, reference answers, a server subprocess."""

import base64
import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llava_hf.serving.generate_command import answer
from llava_hf.serving.inference import SamplingArguments
from llava_hf.testing import make_image, make_tiny_model, make_tiny_processor

SERVE_LINE = re.compile(r"llava-hf serve: .* on (http://[\d.]+:\d+)")


def save_tiny_checkpoint(folder: Path) -> Path:
    """The tiny model and processor (`llava_hf.testing`), saved as a checkpoint folder."""
    make_tiny_model().save_pretrained(folder)
    make_tiny_processor().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("serving") / "tiny-llava")


@pytest.fixture(scope="module")
def tiny():
    """(model, processor) as the server loads them: eval mode, left padding."""
    model, processor = make_tiny_model(), make_tiny_processor()
    processor.tokenizer.padding_side = "left"
    return model, processor


def png_bytes(seed: int = 0, size=(40, 48)) -> bytes:
    buffer = io.BytesIO()
    make_image(seed, size).save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def image_message(text: str, seed: int = 0) -> dict:
    """An OpenAI user message with one PNG image (as a data: URL) and a question."""
    return {
        "role": "user",
        "content": [
            {"type": "text", "text": text},
            {"type": "image_url", "image_url": {"url": data_url(png_bytes(seed))}},
        ],
    }


def reference_answer(model, processor, question: str, seed: int | None, max_new_tokens: int) -> str:
    """The greedy answer computed directly with model.generate (no server), for one user turn."""
    content = ([{"type": "image"}] if seed is not None else []) + [{"type": "text", "text": question}]
    images = [make_image(seed)] if seed is not None else []
    sampling = SamplingArguments(max_new_tokens=max_new_tokens, temperature=0.0)
    return answer(model, processor, [{"role": "user", "content": content}], images, sampling)


def subprocess_env(**extra) -> dict:
    # One torch thread: the tiny model gains nothing from more, and spinning threads thrash a shared 2-core runner.
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONIOENCODING="utf-8")
    env["OMP_NUM_THREADS"] = "1"
    env.update(extra)
    return env


def start_server(checkpoint: Path, *args: str, log_path: Path, env: dict | None = None):
    """Start `llava-hf serve` in a subprocess on a free port; returns (process, base_url) once it listens."""
    command = [sys.executable, "-m", "llava_hf.cli", "serve", "--model", str(checkpoint), "--port", "0", *args]
    log = open(log_path, "w")
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env or subprocess_env(),
        bufsize=1,
        start_new_session=True,  # its own process group, so stop_server reaches anything it started
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if match := SERVE_LINE.search(line):
            return process, match.group(1)
    stop_server(process)
    raise RuntimeError(f"the server did not start; its log:\n{Path(log_path).read_text()}")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (uvicorn shuts down gracefully), SIGKILL if it is still there after 60 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")
