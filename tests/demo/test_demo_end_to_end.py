"""`llava-hf demo` end to end at reduced size: every step runs (world, datagen, towers, stage 1, stage 2, evaluation,
Hub-ready folder, pipeline chat, report) and the model answers held-out multiple-choice questions above chance."""

import json
import math

from PIL import Image

from llava_hf.cli import main as llava_hf_main

REDUCED = [
    "--num-train-images", "500",
    "--num-test-images", "40",
    "--clip-steps", "150",
    "--language-model-steps", "60",
    "--stage1-epochs", "1",
    "--stage2-epochs", "1",
    "--max-open-questions-images", "4",
    "--device", "cpu",
    "--progress", "false",
]  # fmt: skip


def test_reduced_demo_learns_and_writes_everything(tmp_path, capsys):
    output_dir = tmp_path / "demo"
    assert llava_hf_main(["demo", "--output-dir", str(output_dir), *REDUCED]) == 0
    printed = capsys.readouterr().out
    assert "Multiple choice on held-out images" in printed and "[9/9] report" in printed

    summary = json.loads((output_dir / "summary.json").read_text())
    overall = summary["multiple_choice"]["overall"]
    assert set(summary["multiple_choice"]) == {"colour", "shape", "count", "position", "overall"}
    # Beating chance for real: at least 3 standard deviations of a chance-level guesser above its mean.
    chance = overall["chance"] / 100
    threshold = chance + 3 * math.sqrt(chance * (1 - chance) / overall["total"])
    assert overall["correct"] / overall["total"] > threshold, summary["multiple_choice"]

    # Hub-ready folder: weights, processor, a card with the evaluation table; it loaded in pipeline() for the chat.
    model_dir = output_dir / "model"
    for name in ("config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (model_dir / name).is_file(), name
    card = (model_dir / "README.md").read_text()
    assert "shapes world multiple choice, overall" in card and "rule-based judge" in card and "model-index" in card
    chat = summary["chat"]
    assert len(chat) == 4 and all(turn["answer"] for turn in chat[1:])

    report_dir = output_dir / "report"
    report = (report_dir / "report.md").read_text()
    assert "rule-based" in report and "| overall |" in report
    for name in ("losses.png", "accuracy.png", "chat_image.png"):
        with Image.open(report_dir / name) as image:
            assert image.format == "PNG" and image.width > 100
    assert set(summary["llava_bench"]) >= {"judge", "conv", "detail", "complex", "overall"}
    assert not list(output_dir.rglob("*.tmp"))
