"""examples/quickstart.py runs as a user would run it, on a tiny checkpoint folder."""

import subprocess
import sys
from pathlib import Path

from llava_hf.testing import make_image

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_quickstart_answers_three_ways(tmp_path, model, processor):
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    make_image(5).save(tmp_path / "image.png")
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / "quickstart.py"),
            "--model",
            str(tmp_path / "model"),
            "--image",
            str(tmp_path / "image.png"),
            "--max-new-tokens",
            "4",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    pipeline_answer = next(line for line in lines if line.startswith("pipeline:")).removeprefix("pipeline: ")
    generate_answer = next(line for line in lines if line.startswith("generate:")).removeprefix("generate: ")
    assert pipeline_answer == generate_answer  # the pipeline and the classes see the same inputs
    assert sum(line.startswith("batch:") for line in lines) == 2
