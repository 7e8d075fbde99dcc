"""POPE (Li et al. 2023): "Is there a <object> in the image?" yes/no questions about COCO images, in three splits
(adversarial, popular, random) that differ in how the absent objects were chosen.

Data layouts read by `build_task`:
- the Hub layout (e.g. `lmms-lab/POPE`): columns question_id, question, answer ("yes"/"no"), image, category (split);
- the original release: a folder of `coco_pope_<split>.json` files (JSON lines `{"question_id", "image", "text",
  "label"}`) plus `image_folder` (default `<folder>/images`) holding the COCO images they name.
Question ids repeat across splits in both, so example ids are `<split>-<question_id>`.

Protocol (the original `scripts/v1_5/eval/pope.sh` + `llava/eval/eval_pope.py`): the prompt is the question plus "Answer the question using a single word
or phrase."; an answer is "no" when its first sentence contains the word "no" or "not" (case-insensitive, commas
ignored), otherwise "yes". Answers that say neither yes nor no are still read as "yes", as in the protocol, and are
listed under `unclear` so a broken model is visible. "yes" is the positive class. Reported per split and as the mean
over splits (LLaVA-1.5's POPE figure is the mean F1): accuracy, precision, recall, F1 and yes-ratio, in percent.
"""

from __future__ import annotations

import json
from pathlib import Path

from .rows import load_rows, require_columns
from .task import Example, Outcome, Task

SPLITS = ("adversarial", "popular", "random")
SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
METRICS = ("accuracy", "precision", "recall", "f1", "yes_ratio")
HUB_COLUMNS = ["question_id", "question", "answer", "image", "category"]


def load_examples(data, split: str = "test", image_folder: str | None = None, splits=SPLITS) -> list[Example]:
    """POPE questions of the chosen POPE splits as `Example`s (answer "yes"/"no", metadata["split"])."""
    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and path.is_dir() and any(path.glob("coco_pope_*.json")):
        return _original_examples(path, image_folder, splits)
    rows = load_rows(data, split)
    require_columns(rows, HUB_COLUMNS, "POPE Hub")
    examples = []
    for row in rows:
        if row["category"] in splits:
            examples.append(_example(row["category"], row["question_id"], row["question"], row["answer"], row["image"]))
    return examples


def _original_examples(folder: Path, image_folder: str | None, splits) -> list[Example]:
    images = Path(image_folder) if image_folder else folder / "images"
    examples = []
    for split in splits:
        path = folder / f"coco_pope_{split}.json"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; pass splits= (--pope-splits) to evaluate only some splits.")
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            examples.append(
                _example(split, record["question_id"], record["text"], record["label"], images / record["image"])
            )
    return examples


def _example(split: str, question_id, question: str, label: str, image) -> Example:
    label = str(label).strip().lower()
    if label not in ("yes", "no"):
        raise ValueError(f"POPE question {split}-{question_id} has label {label!r}; labels are 'yes' or 'no'.")
    return Example(
        id=f"{split}-{question_id}",
        prompt=f"{question}\n{SHORT_ANSWER_INSTRUCTION}",
        images=[image],
        answer=label,
        metadata={"split": split},
    )


def parse_yes_no(text: str) -> str:
    """'no' if the first sentence contains the word no/not, else 'yes' (the POPE protocol; module docstring)."""
    first_sentence = text.split(".")[0].replace(",", "")
    words = first_sentence.lower().split()
    return "no" if "no" in words or "not" in words else "yes"


def is_unclear(text: str) -> bool:
    """True when the first sentence says neither yes nor no (read as 'yes' by the protocol, but worth listing)."""
    words = text.split(".")[0].replace(",", "").lower().split()
    return not ({"yes", "no", "not"} & set(words))


def binary_metrics(predicted: list[str], labels: list[str]) -> dict[str, float]:
    """Accuracy, precision, recall, F1 and yes-ratio in percent, 'yes' positive; 0 where a ratio has no denominator."""
    pairs = list(zip(predicted, labels))
    true_positive = sum(p == "yes" and t == "yes" for p, t in pairs)
    false_positive = sum(p == "yes" and t == "no" for p, t in pairs)
    true_negative = sum(p == "no" and t == "no" for p, t in pairs)
    false_negative = sum(p == "no" and t == "yes" for p, t in pairs)
    total = len(pairs)
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0
    recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": 100.0 * (true_positive + true_negative) / total if total else 0.0,
        "precision": 100.0 * precision,
        "recall": 100.0 * recall,
        "f1": 100.0 * f1,
        "yes_ratio": 100.0 * (true_positive + false_positive) / total if total else 0.0,
    }


def score(outcomes: list[Outcome]) -> dict:
    """Metrics per split and their mean; a missing answer counts as wrong (the opposite of its label)."""
    per_split: dict[str, dict] = {}
    unclear = []
    splits = [split for split in SPLITS if any(o.example.metadata["split"] == split for o in outcomes)]
    for split in splits:
        chosen = [outcome for outcome in outcomes if outcome.example.metadata["split"] == split]
        flip = {"yes": "no", "no": "yes"}
        predicted = [o.parsed if o.parsed is not None else flip[o.example.answer] for o in chosen]
        per_split[split] = binary_metrics(predicted, [o.example.answer for o in chosen])
        per_split[split]["count"] = len(chosen)
        unclear += [{"question_id": o.example.id, "text": o.text} for o in chosen if o.text and is_unclear(o.text)]
    mean = {metric: sum(per_split[s][metric] for s in splits) / len(splits) for metric in METRICS} if splits else {}
    metrics = {f"{split}/{metric}": per_split[split][metric] for split in splits for metric in METRICS}
    metrics.update({metric: value for metric, value in mean.items()})
    rows = [[split, per_split[split]["count"]] + [per_split[split][metric] for metric in METRICS] for split in splits]
    if len(splits) > 1:
        rows.append(["mean", sum(per_split[s]["count"] for s in splits)] + [mean[metric] for metric in METRICS])
    return {
        "metrics": metrics,
        "per_split": per_split,
        "unclear": unclear,
        "table": {"columns": ["split", "questions", "accuracy", "precision", "recall", "F1", "yes %"], "rows": rows},
    }


def build_task(
    data,
    split: str = "test",
    image_folder: str | None = None,
    splits=SPLITS,
    limit: int | None = None,
    max_new_tokens: int | None = None,
) -> Task:
    """The POPE task over the chosen splits (all three by default)."""
    unknown = [name for name in splits if name not in SPLITS]
    if unknown:
        raise ValueError(f"unknown POPE split(s) {unknown}; choose from {SPLITS}.")
    return Task(
        name="pope",
        examples=load_examples(data, split, image_folder, tuple(splits))[:limit],
        score=score,
        parse=lambda text, example: parse_yes_no(text),
        max_new_tokens=max_new_tokens or 16,
        dataset_type="lmms-lab/POPE",
        dataset_name="POPE",
        dataset_split=split,
    )
