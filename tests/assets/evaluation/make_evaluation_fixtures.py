# /work/venv/bin/python tests/assets/evaluation/make_evaluation_fixtures.py
"""Writes the small hand-made evaluation fixtures next to this file (the expected scores in tests/evaluation are
computed by hand from them, so edit both together).

- scienceqa/problems.json, pid_splits.json, test/<pid>/image.png, train/<pid>/image.png: six test questions covering
  every table column once or twice, two train questions (one lecture with a newline);
- pope/coco_pope_{adversarial,popular,random}.json + pope/images/: 4 + 3 + 2 questions;
- llava_bench_wild/questions.jsonl, answers_gpt4.jsonl, context.jsonl, images/: three In-the-Wild style questions.
The LLaVA-Bench COCO text files in llava_bench_coco/ are the released ones, copied unchanged.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


def image(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def problem(
    question, choices, answer, subject, grade, hint="", with_image=False, lecture="", solution="", split="test"
):
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": hint,
        "image": "image.png" if with_image else None,
        "task": "closed choice",
        "grade": f"grade{grade}",
        "subject": subject,
        "topic": "topic",
        "category": "category",
        "skill": "skill",
        "lecture": lecture,
        "solution": solution,
        "split": split,
    }


def scienceqa() -> None:
    folder = HERE / "scienceqa"
    problems = {
        "1": problem("Which animal is shown?", ["cat", "dog"], 1, "natural science", 3, with_image=True),
        "2": problem("Which is a solid?", ["rock", "milk", "air"], 0, "natural science", 8, hint="Solids keep shape."),
        "3": problem(
            "Which state is farthest north?",
            ["Texas", "Ohio", "Maine"],
            2,
            "social science",
            5,
            hint="Look at the map.",
            with_image=True,
        ),
        "4": problem("What is the capital of France?", ["Rome", "Paris", "Berlin"], 1, "social science", 10),
        "5": problem("Which word is a noun?", ["table", "run"], 0, "language science", 2),
        "6": problem("Which letter is shown?", ["Q", "R"], 1, "language science", 7, with_image=True),
        "7": problem(
            "Which magnet pulls?",
            ["north-south", "north-north"],
            0,
            "natural science",
            4,
            with_image=True,
            lecture="Magnets attract.\nOpposite poles attract.",
            solution="N and S attract.",
            split="train",
        ),
        "8": problem(
            "Which word rhymes with cat?",
            ["hat", "dog"],
            0,
            "language science",
            1,
            lecture="Rhymes end alike.",
            solution="Hat and cat end in -at.",
            split="train",
        ),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "problems.json").write_text(json.dumps(problems, indent=1) + "\n")
    splits = {"train": ["7", "8"], "val": [], "test": ["1", "2", "3", "4", "5", "6"]}
    (folder / "pid_splits.json").write_text(json.dumps(splits) + "\n")
    for split, pids in splits.items():
        for pid in pids:
            if problems[pid]["image"]:
                image(folder / split / pid / "image.png", int(pid))


def pope() -> None:
    folder = HERE / "pope"
    questions = {
        "adversarial": [("dog", "yes"), ("cat", "yes"), ("car", "no"), ("tree", "no")],
        "popular": [("person", "yes"), ("chair", "no"), ("cup", "yes")],
        "random": [("bird", "yes"), ("boat", "no")],
    }
    for split_index, (split, items) in enumerate(questions.items()):
        lines = []
        for number, (thing, label) in enumerate(items, start=1):
            name = f"COCO_val2014_{split_index}{number:05d}.jpg"
            image(folder / "images" / name, 100 + 10 * split_index + number)
            record = {"question_id": number, "image": name, "text": f"Is there a {thing} in the image?", "label": label}
            lines.append(json.dumps(record))
        (folder / f"coco_pope_{split}.json").write_text("\n".join(lines) + "\n")


def llava_bench_wild() -> None:
    folder = HERE / "llava_bench_wild"
    contexts = [{"id": "001", "image": "001.jpg", "caption": "A red kite above a sandy beach with two children."}]
    questions = [
        {"question_id": 0, "image": "001.jpg", "text": "What colour is the kite?", "category": "conv"},
        {"question_id": 1, "image": "001.jpg", "text": "Describe the image in detail.", "category": "detail"},
        {
            "question_id": 2,
            "image": "001.jpg",
            "text": "Why might the children be at the beach?",
            "category": "complex",
        },
    ]
    answers = [
        {"question_id": 0, "text": "The kite is red.", "category": "conv"},
        {"question_id": 1, "text": "Two children fly a red kite on a sandy beach.", "category": "detail"},
        {"question_id": 2, "text": "They are probably on holiday and enjoying the wind.", "category": "complex"},
    ]
    folder.mkdir(parents=True, exist_ok=True)
    for name, records in (("context.jsonl", contexts), ("questions.jsonl", questions), ("answers_gpt4.jsonl", answers)):
        (folder / name).write_text("".join(json.dumps(record) + "\n" for record in records))
    image(folder / "images" / "001.jpg", 7)


if __name__ == "__main__":
    scienceqa()
    pope()
    llava_bench_wild()
