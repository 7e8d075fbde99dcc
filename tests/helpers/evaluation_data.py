"""Helpers shared by the evaluation tests: fixture paths, Hub-layout parquet built from the original fixtures."""

import json
from pathlib import Path

from PIL import Image

ASSETS = Path(__file__).parents[1] / "assets" / "evaluation"
SCIENCEQA = ASSETS / "scienceqa"
SCIENCEQA_ORIGINAL = ASSETS / "scienceqa_original"  # what the original LLaVA scripts make of SCIENCEQA
POPE = ASSETS / "pope"
LLAVA_BENCH_COCO = ASSETS / "llava_bench_coco"
LLAVA_BENCH_WILD = ASSETS / "llava_bench_wild"


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def scienceqa_parquet(folder: Path, split: str = "test") -> Path:
    """The fixture's questions in the Hub layout (`data/<split>-00000-of-00001.parquet`, PIL images, index answers)."""
    import datasets

    problems = json.loads((SCIENCEQA / "problems.json").read_text())
    pids = json.loads((SCIENCEQA / "pid_splits.json").read_text())[split]
    columns = [
        "question",
        "choices",
        "answer",
        "hint",
        "task",
        "grade",
        "subject",
        "topic",
        "category",
        "skill",
        "lecture",
        "solution",
    ]
    rows = {column: [problems[pid][column] for pid in pids] for column in columns}
    rows["image"] = [
        Image.open(SCIENCEQA / split / pid / "image.png") if problems[pid]["image"] else None for pid in pids
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "choices": datasets.List(datasets.Value("string")),
            "answer": datasets.Value("int8"),
            **{c: datasets.Value("string") for c in columns if c not in ("choices", "answer")},
        }
    )
    path = folder / "data" / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(rows, features=features).to_parquet(str(path))
    return path.parent
