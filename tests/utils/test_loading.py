"""The loading policy of every command: the `--dtype auto` rule, the weights' size read from the safetensors headers,
and a model too big for memory refused with exit 2 before anything is loaded."""

import os
import subprocess
import sys

import pytest
import torch

from llava_hf.serving import generate_command as generate
from llava_hf.testing import make_tiny_model, make_tiny_processor
from llava_hf.utils import loading
from llava_hf.utils.loading import WeightsSize, check_memory, choose_dtype, read_weights_size

GiB = 2**30
SEVEN_B_FP16 = WeightsSize({"float16": 7_063_427_072}, other_bytes=0)  # LLaVA-1.5-7B's element count


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("loading") / "tiny"
    model = make_tiny_model()
    model.to(torch.float16).save_pretrained(folder)
    make_tiny_processor().save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def test_weights_size_comes_from_the_safetensors_headers(checkpoint):
    folder, parameters = checkpoint
    size = read_weights_size(str(folder))
    assert size.dtype == "float16" and sum(size.floating.values()) == parameters
    assert size.bytes_at() == size.bytes_at("float16") == 2 * parameters
    assert size.bytes_at("float32") == 4 * parameters
    assert read_weights_size(str(folder.parent)) is None  # no safetensors: the size is unknown


@pytest.mark.parametrize(
    "flags, native", [("fpu sse avx2 avx512f avx512_bf16", True), ("fpu amx_bf16 amx_tile", True), ("fpu avx2", False)]
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert loading.cpu_has_native_bf16(str(cpuinfo)) is native


def test_auto_dtype_rule(monkeypatch):
    tiny = WeightsSize({"float16": 1_000_000}, other_bytes=0)
    assert choose_dtype("auto", "cpu", tiny, available=8 * GiB)[0] == torch.float32
    assert "small" in choose_dtype("auto", "cpu", tiny, available=8 * GiB)[1]
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    dtype, reason = choose_dtype("auto", "cpu", SEVEN_B_FP16, available=22 * GiB)
    assert dtype == torch.bfloat16 and "natively" in reason
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert choose_dtype("auto", "cpu", SEVEN_B_FP16, available=22 * GiB)[0] == torch.float16  # as saved
    # small at float32 but not next to the available memory: not float32
    assert choose_dtype("auto", "cpu", tiny, available=3 * 1_000_000)[0] == torch.float16
    assert choose_dtype("auto", "cuda", SEVEN_B_FP16, available=80 * GiB)[0] == "auto"
    assert choose_dtype("float32", "cpu", SEVEN_B_FP16, available=22 * GiB) == (torch.float32, "--dtype float32")
    with pytest.raises(ValueError, match="--dtype 'float8' is not one of auto"):
        choose_dtype("float8", "cpu", SEVEN_B_FP16, 22 * GiB)


def test_too_big_for_memory_names_the_options():
    check_memory("m", SEVEN_B_FP16, torch.bfloat16, "cpu", available=22 * GiB)  # 13.2 GiB fits
    with pytest.raises(ValueError) as error:
        check_memory("llava-7b", SEVEN_B_FP16, torch.float32, "cpu", available=22 * GiB)
    message = str(error.value)
    assert message.startswith("llava-7b needs 26.3 GiB for its weights at float32 (+10% to run) but 22.0 GiB")
    for option in ("--dtype bfloat16 (13.2 GiB)", "--dtype float16 (13.2 GiB)", "--load_in_4bit", "device_map='auto'"):
        assert option in message
    with pytest.raises(ValueError, match="of GPU memory is available; use --load_in_4bit"):
        check_memory("m", SEVEN_B_FP16, "auto", "cuda", available=8 * GiB)


def test_generate_prints_the_dtype_choice(checkpoint, capsys):
    folder, _ = checkpoint
    assert generate.main(["--model", str(folder), "--prompt", "Hi", "--max_new_tokens", "2"]) == 0
    err = capsys.readouterr().err
    assert "llava-hf: dtype float32 on cpu (the weights are small (0.0 GiB at float32), weights 0.0 GiB)" in err


def test_generate_exits_2_before_loading_a_model_that_does_not_fit(checkpoint):
    """LLAVA_HF_AVAILABLE_MEMORY stands in for a small machine; the refusal comes before any weight is read."""
    folder, _ = checkpoint
    env = dict(os.environ, LLAVA_HF_AVAILABLE_MEMORY="64KiB", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "llava_hf.cli", "generate", "--model", str(folder), "--prompt", "Hi"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("llava-hf generate: error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "of memory is available; use" in errors[0] and "--load_in_4bit" in errors[0]


def test_docs_snippet_runs(checkpoint, capsys):
    """The python block of docs/real_size.md, as written, on the tiny checkpoint."""
    import re
    from pathlib import Path

    docs = (Path(__file__).parents[2] / "docs" / "real_size.md").read_text()
    (block,) = re.findall(r"^```python\n(.*?)^```", docs, flags=re.DOTALL | re.MULTILINE)
    folder, _ = checkpoint
    namespace = {}
    exec(block.replace('"llava_demo/model"', repr(str(folder))), namespace)
    assert namespace["dtype"] == torch.float32 and namespace["pipe"].model.dtype == torch.float32
    assert "llava-hf: dtype float32 on cpu (the weights are small" in capsys.readouterr().err
