"""Opt-in checks on the LLaVA-1.5-7B-shaped stand-in (13 GiB of weights): `llava-hf generate` with default flags
answers within 1.1 x the 16-bit weights, and `--dtype float32` (26 GiB) is refused with exit 2 on a machine with
less memory. The stand-ins are built by benchmarks/standins/make_release_standin.py and converted with `llava-hf
convert`; CI does not build them, so these run only where LLAVA_HF_STANDINS names their folder. The same logic is
tested on tiny models in tests/utils/test_loading.py and tests/utils/test_memory.py."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

STANDINS = os.environ.get("LLAVA_HF_STANDINS")
SEVEN_B = Path(STANDINS or "/nonexistent") / "llava-1.5-7b-hf"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not SEVEN_B.is_dir(),
        reason="set LLAVA_HF_STANDINS to the folder holding llava-1.5-7b-hf "
        "(benchmarks/standins/make_release_standin.py, then llava-hf convert)",
    ),
]


def run_generate(*extra: str, image: Path) -> tuple[subprocess.CompletedProcess, float]:
    """`llava-hf generate` on the 7B stand-in under /usr/bin/time -v; returns (result, peak RSS in GiB)."""
    command = [sys.executable, "-m", "llava_hf.cli", "generate", "--model", str(SEVEN_B), "--image", str(image)]
    command += ["--prompt", "What is shown in this image?", "--max_new_tokens", "2", *extra]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    return result, int(peak.group(1)) / 2**20


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("real_size") / "photo.png"
    Image.new("RGB", (640, 480), (200, 120, 40)).save(path)
    return path


def test_7b_answers_with_default_flags_within_1_1x_the_16_bit_weights(image):
    from llava_hf.utils.memory import read_weights_size

    sixteen_bit = read_weights_size(str(SEVEN_B)).bytes_at("bfloat16") / 2**30
    result, peak = run_generate(image=image)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "llava-hf: dtype" in result.stderr
    assert peak <= 1.1 * sixteen_bit, f"peak {peak:.2f} GiB for {sixteen_bit:.2f} GiB of 16-bit weights"


def test_7b_in_float32_is_refused_before_loading(image):
    from llava_hf.utils.memory import available_memory, read_weights_size

    if read_weights_size(str(SEVEN_B)).bytes_at("float32") * 1.1 <= available_memory():
        pytest.skip("this machine has room for the 7B weights in float32")
    result, peak = run_generate("--dtype", "float32", image=image)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("llava-hf generate: error:")]
    assert len(errors) == 1 and "--dtype bfloat16" in errors[0] and "--load_in_4bit" in errors[0]
    assert peak < 2  # refused before any weight was read
