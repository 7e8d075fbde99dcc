"""Every command and Python block of docs/quantization.md runs as written, in order, in a folder holding what the
page names: `llava-1.5-13b-hf` is the tiny checkpoint (its language model 64 wide, which 4-bit on CPU needs),
`photo.png` an image, `build/tiny/` the tiny parts, data and stage 1 that `examples/train_tiny.py` makes. Only the
recipe folder is substituted (the page gives it relative to the repository)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import REAL_SHAPED
from llava_hf.cli import main as llava_hf
from llava_hf.testing import (
    make_image,
    make_tiny_data,
    make_tiny_parts,
    make_tiny_processor,
    make_tiny_quantizable_model,
)

pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow  # a QLoRA run, quantization, three generations: a minute or two on 2 loaded cores

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "quantization.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", PAGE.read_text(), flags=re.DOTALL | re.MULTILINE)


def test_every_block_of_the_quantization_page_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_tiny_quantizable_model().save_pretrained("llava-1.5-13b-hf")
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained("llava-1.5-13b-hf")
    make_image(0).save("photo.png")
    make_tiny_parts(Path("build/tiny/parts"), REAL_SHAPED)
    make_tiny_data(Path("build/tiny/data"))
    stage1 = ["train", "--config", str(ROOT / "examples/configs/tiny_stage1_pretrain.yaml"), "--max_steps", "2"]
    assert llava_hf(stage1) == 0

    page = PAGE.read_text()
    order = sorted(
        [(page.index(block), "bash", block) for block in blocks("bash")]
        + [(page.index(block), "python", block) for block in blocks("python")]
    )
    assert [kind for _, kind, _ in order].count("bash") >= 4 and any(kind == "python" for _, kind, _ in order)
    for _, kind, block in order:
        block = block.replace("examples/configs/", str(ROOT / "examples" / "configs") + "/")
        if kind == "python":
            exec(compile(block, "docs/quantization.md", "exec"), {"__name__": "__docs__"})
            continue
        for line in block.strip().splitlines():
            argv = shlex.split(line)
            if argv[0] == "llava-hf":
                assert llava_hf(argv[1:]) == 0, line
            else:
                assert argv[0] == "python", line
                result = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, cwd=tmp_path)
                assert result.returncode == 0, result.stderr[-3000:]

    assert json.loads(Path("llava-1.5-13b-4bit/config.json").read_text())["quantization_config"]["load_in_4bit"]
    answers = [
        line for line in capsys.readouterr().out.splitlines() if line and not line.startswith(("quantized", "{"))
    ]
    assert answers  # the generate commands printed their answers
    assert Path("build/tiny/stage2_qlora/adapter_config.json").is_file()
    for merged in ("build/tiny/stage2_qlora/merged", "build/tiny/stage2_qlora_merged"):
        assert Path(merged, "config.json").is_file() and Path(merged, "model.safetensors").is_file()
