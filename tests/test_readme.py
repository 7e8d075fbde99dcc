"""Every ```python block of README.md and docs/*.md runs as written, on the tiny model: only the model and data paths
are substituted. The blocks of one file run in order and in one namespace (later blocks use what earlier ones define,
as a reader would); each file starts a fresh namespace."""

import re
from pathlib import Path

import pytest

from llava_hf.processing import get_chat_template
from llava_hf.testing import (
    make_image,
    make_tiny_model,
    make_tiny_next_model,
    make_tiny_next_processor,
    make_tiny_processor,
)

ROOT = Path(__file__).parents[1]
# docs/quantization.md's blocks need a quantized checkpoint: tests/test_docs_quantization.py runs them on one.
OWN_TEST = {"quantization.md"}
DOCUMENTS = [ROOT / "README.md", *sorted(path for path in (ROOT / "docs").glob("*.md") if path.name not in OWN_TEST)]


def python_blocks(document: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", document.read_text(), flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A tiny checkpoint, an image and a tiny LLaVA JSON + image folder; returns README literal -> substitute."""
    checkpoint = tmp_path / "checkpoint"
    make_tiny_model().save_pretrained(checkpoint)
    make_tiny_processor(chat_template=get_chat_template("vicuna_v1")).save_pretrained(checkpoint)
    next_checkpoint = tmp_path / "next_checkpoint"  # a LLaVA-1.6 (AnyRes) one, saved in the built-in llava_next format
    make_tiny_next_model().save_pretrained(next_checkpoint)
    make_tiny_next_processor(chat_template=get_chat_template("vicuna_v1")).save_pretrained(next_checkpoint)
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
        '"llava-v1.6-vicuna-7b-hf"': repr(str(next_checkpoint)),
        '"photo.png"': repr(str(tmp_path / "photo.png")),
        '"llava_v1_5_mix665k.json"': repr(str(tmp_path / "data.json")),
        'image_folder="data/"': f"image_folder={str(images)!r}",
    }


def test_readme_and_docs_have_python_snippets():
    assert python_blocks(ROOT / "README.md")
    assert python_blocks(ROOT / "docs" / "training.md")


@pytest.mark.slow  # generation twice and a short TRL training run: ~40 s on a loaded 2-core machine
def test_every_python_snippet_runs_as_written(workspace):
    used = set()
    namespaces = {}
    for document in DOCUMENTS:
        namespace: dict = {"__name__": "__readme__"}
        for number, block in enumerate(python_blocks(document), start=1):
            for literal, substitute in workspace.items():
                if literal in block:
                    block = block.replace(literal, substitute)
                    used.add(literal)
            exec(compile(block, f"{document.name} python block {number}", "exec"), namespace)
        namespaces[document.name] = namespace
    # every substitution still matches a snippet (a renamed path would otherwise go untested)
    assert used == set(workspace)
    # the TRL snippet trained on the substituted data, with loss only where LlavaCollator puts it
    trainer = namespaces["training.md"]["trainer"]
    assert trainer.state.global_step > 0 and trainer.state.log_history[-1]["train_loss"] > 0
