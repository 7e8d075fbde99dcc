"""The demo's report: `report.md` with the results, PNG plots drawn with PIL, and held-out examples with answers.

Plots are drawn with PIL (already a dependency) rather than matplotlib, so the demo needs nothing beyond the core
install: `losses.png` (one panel per training run: the two tower pretrainings, stage 1, stage 2) and
`accuracy.png` (multiple-choice accuracy per question type, with the chance level marked).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..evaluation.scienceqa import parse_choice
from ..utils.io import atomic_write
from .questions import multiple_choice_problems, open_questions
from .world import World

PANEL_SIZE = (420, 240)
MARGIN = 40
LINE_COLOUR = (31, 90, 220)
BAR_COLOUR = (44, 160, 44)
CHANCE_COLOUR = (214, 39, 40)
TEXT_COLOUR = (20, 20, 20)
GRID_COLOUR = (225, 225, 225)


def _font():
    return ImageFont.load_default()


def _save_png(image: Image.Image, path: Path) -> None:
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    atomic_write(path, encoded.getvalue())


def plot_curves(curves: dict[str, list[tuple[int, float]]], path: Path) -> None:
    """One line panel per curve (x: step, y: training loss), two panels per row."""
    names = [name for name, points in curves.items() if points]
    columns = 2
    rows = max(1, (len(names) + columns - 1) // columns)
    width, height = PANEL_SIZE
    image = Image.new("RGB", (columns * width, rows * height), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    for index, name in enumerate(names):
        left, top = (index % columns) * width, (index // columns) * height
        points = curves[name]
        steps = [step for step, _ in points]
        losses = [loss for _, loss in points]
        low, high = min(losses), max(losses)
        high = high if high > low else low + 1.0
        x0, y0, x1, y1 = left + MARGIN + 10, top + 28, left + width - 15, top + height - MARGIN
        for fraction in (0.0, 0.25, 0.5, 0.75, 1.0):  # horizontal grid with loss labels
            y = y1 - fraction * (y1 - y0)
            draw.line((x0, y, x1, y), fill=GRID_COLOUR)
            draw.text((left + 4, y - 5), f"{low + fraction * (high - low):.2f}", fill=TEXT_COLOUR, font=font)
        draw.rectangle((x0, y0, x1, y1), outline=TEXT_COLOUR)
        first, last = steps[0], steps[-1] if steps[-1] > steps[0] else steps[0] + 1
        xy = [
            (x0 + (step - first) / (last - first) * (x1 - x0), y1 - (loss - low) / (high - low) * (y1 - y0))
            for step, loss in points
        ]
        if len(xy) > 1:
            draw.line(xy, fill=LINE_COLOUR, width=2)
        else:
            draw.ellipse((xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2), fill=LINE_COLOUR)
        draw.text((x0, top + 8), f"{name}: loss {losses[0]:.2f} -> {losses[-1]:.2f}", fill=TEXT_COLOUR, font=font)
        draw.text((x0, y1 + 6), f"step {steps[0]}", fill=TEXT_COLOUR, font=font)
        draw.text((x1 - 60, y1 + 6), f"step {steps[-1]}", fill=TEXT_COLOUR, font=font)
    _save_png(image, path)


def plot_accuracy(by_type: dict[str, dict], path: Path) -> None:
    """Bars of accuracy (%) per question type, each with its chance level as a red tick."""
    names = list(by_type)
    width, height = 120 * len(names) + 2 * MARGIN, 300
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    font = _font()
    x0, y0, y1 = MARGIN, 30, height - MARGIN
    draw.text((x0, 8), "multiple-choice accuracy (%) on held-out images; red = chance", fill=TEXT_COLOUR, font=font)
    for value in (0, 25, 50, 75, 100):
        y = y1 - value / 100 * (y1 - y0)
        draw.line((x0, y, width - 10, y), fill=GRID_COLOUR)
        draw.text((6, y - 5), str(value), fill=TEXT_COLOUR, font=font)
    for index, name in enumerate(names):
        row = by_type[name]
        left = x0 + 20 + index * 120
        top = y1 - row["accuracy"] / 100 * (y1 - y0)
        draw.rectangle((left, top, left + 70, y1), fill=BAR_COLOUR)
        chance = y1 - row["chance"] / 100 * (y1 - y0)
        draw.line((left - 6, chance, left + 76, chance), fill=CHANCE_COLOUR, width=3)
        draw.text((left, max(y0, top - 14)), f"{row['accuracy']:.1f}", fill=TEXT_COLOUR, font=font)
        draw.text((left, y1 + 8), name, fill=TEXT_COLOUR, font=font)
    draw.line((x0, y1, width - 10, y1), fill=TEXT_COLOUR)
    _save_png(image, path)


def _predictions(eval_dir: Path, task_name: str) -> dict[str, dict]:
    path = eval_dir / task_name / "predictions.jsonl"
    records = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            records[str(record["question_id"])] = record
    return records


def _question_of(prompt: str) -> str:
    """The user's text from a rendered vicuna_v1 prompt ("... USER: <image>\\n{question} ASSISTANT:")."""
    text = prompt.split("USER:", 1)[-1].rsplit("ASSISTANT:", 1)[0]
    return text.replace("<image>", "").strip()


def write_report(
    report_dir: Path, summary: dict, curves: dict, world: World, eval_dir: Path, examples: int = 3
) -> Path:
    """Write report.md + losses.png + accuracy.png + example images into `report_dir`; returns report.md's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    plot_curves(curves, report_dir / "losses.png")
    by_type = summary["multiple_choice"]
    plot_accuracy(by_type, report_dir / "accuracy.png")
    config = summary["config"]

    lines = [
        "# llava_hf demo report",
        "",
        f"The whole LLaVA recipe on the synthetic shapes world (seed {config['seed']}, device {summary['device']}, "
        f"{summary['total_seconds']:.0f} s): {config['num_train_images']} train images, {config['num_test_images']} "
        f"held-out images of {config['image_size']} px.",
        f"Stage 1: {'skipped (--skip-stage1 ablation)' if config['skip_stage1'] else 'projector only, captions'}; "
        f"vision feature layer {config['vision_feature_layer']}"
        f"{' (LLaVA: penultimate)' if config['vision_feature_layer'] == -2 else ' (ablation: last layer)'}.",
        "",
        "## Multiple choice on held-out images (ScienceQA format)",
        "",
        "| question type | correct | total | accuracy (%) | chance (%) |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {row['correct']} | {row['total']} | {row['accuracy']:.1f} | {row['chance']:.1f} |"
        for name, row in by_type.items()
    ]
    bench = summary["llava_bench"]
    lines += [
        "",
        "![accuracy per question type](accuracy.png)",
        "",
        f"## LLaVA-Bench-style relative score ({bench['judge']})",
        "",
        "Relative score = mean rating of the model's answer / mean rating of the reference answer x 100, per category.",
    ]
    if bench["judge"] == "rule-based judge":
        lines.append(
            "The judge is **automatic and rule-based**, not an LLM: it checks every colour/shape/count/position/"
            "left-right claim in an answer against the annotations and rates 1 + 9 x F1 (see "
            "`llava_hf/demo/questions.py`). It measures factual grounding, not fluency."
        )
    checks = summary["answer_checks"]
    repetition = checks["repetition"]
    lines += ["", "| category | relative score | answers repeating a phrase |", "|---|---|---|"]
    lines += [
        f"| {name} | {value:.1f} | {repetition[name]['repeating']} of {repetition[name]['answers']} |"
        for name, value in bench.items()
        if name != "judge"
    ]
    objects, reference = checks["detail_objects"], checks["detail_objects_reference"]
    lines += [
        "",
        "A phrase is repeated when a 3-word sequence occurs twice or more in the answer but at most once in the "
        "reference. The object checker (`llava_hf/demo/object_check.py`) reads the detailed descriptions: recall is "
        "the share of the images' objects named with their right colour, shape and position, precision the share of "
        "the objects named that are right.",
        "",
        "| detailed descriptions | objects | objects named | recall (%) | precision (%) |",
        "|---|---|---|---|---|",
        f"| model | {objects['objects']} | {objects['mentions']} | {objects['recall']:.1f} | {objects['precision']:.1f} |",
        f"| reference answers | {reference['objects']} | {reference['mentions']} | {reference['recall']:.1f} | "
        f"{reference['precision']:.1f} |",
    ]
    lines += [
        "",
        "## Training curves",
        "",
        "![loss curves](losses.png)",
        "",
        "| run | first loss | last loss | steps |",
        "|---|---|---|---|",
    ]
    for name, points in curves.items():
        if points:
            lines.append(f"| {name} | {points[0][1]:.3f} | {points[-1][1]:.3f} | {points[-1][0]} |")
    lines += ["", "## Held-out examples", ""]

    choice_predictions = _predictions(eval_dir, "shapes_multiple_choice")
    bench_dir = next((path.name for path in sorted(eval_dir.glob("llava_bench*")) if path.is_dir()), None)
    open_predictions = _predictions(eval_dir, bench_dir) if bench_dir else {}
    references = {example.id: example for example in open_questions(world, "test")}
    test_images = world.splits["test"][:examples]
    for world_image in test_images:
        picture = world.open(world_image).resize((192, 192), Image.NEAREST)
        _save_png(picture, report_dir / f"{world_image.id}.png")
        lines += [f"### {world_image.id}", "", f"![{world_image.id}]({world_image.id}.png)", ""]
        lines.append(
            "Annotations: "
            + "; ".join(f"{item.size} {item.category} in the {item.region}" for item in world_image.objects)
        )
        lines.append("")
        problems = {f"{world_image.id}_{kind}": problem for kind, problem in multiple_choice_problems(world_image)}
        for question_id, record in sorted(choice_predictions.items()):
            if question_id.startswith(world_image.id + "_"):
                question = _question_of(record["prompt"]).replace("\n", " / ")
                problem = problems[question_id]
                truth = "ABCDE"[problem["answer"]]
                verdict = "right" if parse_choice(record["text"], problem["choices"]) == truth else "wrong"
                lines.append(
                    f"- **Q:** {question}  \n  **model:** {record['text']} · **truth:** {truth} "
                    f"({problem['choices'][problem['answer']]}) · {verdict}"
                )
        for category in ("conv", "detail", "complex"):
            record = open_predictions.get(f"{world_image.id}_{category}")
            if record is not None:
                example = references[record["question_id"]]
                lines.append(
                    f"- **Q ({category}):** {example.prompt}  \n  **model:** {record['text']}  \n"
                    f"  **reference:** {example.answer}"
                )
        lines.append("")

    chat = summary["chat"]
    lines += ['## Chat about a held-out image (`pipeline("image-text-to-text")` on the saved folder)', ""]
    picture = world.open(world.splits["test"][0] if not chat else _find(world, chat[0]["image_id"]))
    _save_png(picture.resize((192, 192), Image.NEAREST), report_dir / "chat_image.png")
    lines += ["![chat image](chat_image.png)", ""]
    for turn in chat[1:]:
        lines += [f"**USER:** {turn['question']}  ", f"**ASSISTANT:** {turn['answer']}", ""]
    # CPU seconds of this process: on a busy machine wall time grows with the load, CPU time much less.
    lines += ["## Time per step (s)", "", "| step | wall seconds | CPU seconds |", "|---|---|---|"]
    cpu = summary.get("cpu_seconds", {})
    lines += [f"| {name} | {seconds} | {cpu.get(name, '')} |" for name, seconds in summary["timings_seconds"].items()]
    lines += ["", "| training run | seconds per optimizer step |", "|---|---|"]
    lines += [f"| {name} | {seconds:.3f} |" for name, seconds in summary["seconds_per_training_step"].items()]
    return atomic_write(report_dir / "report.md", "\n".join(lines) + "\n")


def _find(world: World, image_id: str):
    return next(image for images in world.splits.values() for image in images if image.id == image_id)


__all__ = ["plot_accuracy", "plot_curves", "write_report"]
