"""Every ```python block of README.md runs as written, in order and in one namespace (later blocks use what earlier
ones define, as a reader would), on the tiny model: only the model and data paths are substituted."""

import re
from pathlib import Path

import pytest

from conftest import make_image, make_tiny_model, make_tiny_processor
from llava_hf.processing import get_chat_template

README = Path(__file__).parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A tiny checkpoint, an image and a tiny LLaVA JSON + image folder; returns README literal -> substitute."""
    checkpoint = tmp_path / "checkpoint"
    make_tiny_model().save_pretrained(checkpoint)
    make_tiny_processor(chat_template=get_chat_template("vicuna_v1")).save_pretrained(checkpoint)
    make_image(0).save(tmp_path / "photo.png")
    images = tmp_path / "images"
    images.mkdir()
    make_image(1).save(images / "a.png")
    records = [
        {
            "id": "1",
            "image": "a.png",
            "conversations": [{"from": "human", "value": "<image>\nWhat is it?"}, {"from": "gpt", "value": "Noise."}],
        },
        {"id": "2", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]},
    ]
    import json

    (tmp_path / "data.json").write_text(json.dumps(records))
    monkeypatch.chdir(tmp_path)  # what a snippet writes (output_dir="out") lands here
    return {
        '"llava_demo/model"': repr(str(checkpoint)),
        '"photo.png"': repr(str(tmp_path / "photo.png")),
        '"llava_v1_5_mix665k.json"': repr(str(tmp_path / "data.json")),
        'image_folder="data/"': f"image_folder={str(images)!r}",
    }


def test_readme_has_python_snippets():
    assert len(python_blocks()) >= 2


@pytest.mark.slow  # generation twice and a short TRL training run: ~40 s on a loaded 2-core machine
def test_every_python_snippet_runs_as_written(workspace):
    namespace: dict = {"__name__": "__readme__"}
    used = set()
    for number, block in enumerate(python_blocks(), start=1):
        for literal, substitute in workspace.items():
            if literal in block:
                block = block.replace(literal, substitute)
                used.add(literal)
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    # every substitution still matches the README (a renamed path would otherwise go untested)
    assert used == set(workspace)
    # the TRL snippet trained on the substituted data, with loss only where LlavaCollator puts it
    history = namespace["trainer"].state.log_history
    assert namespace["trainer"].state.global_step > 0 and history[-1]["train_loss"] > 0
