# python tests/assets/evaluation/make_evaluation_fixtures.py
"""Writes the small hand-made evaluation fixtures next to this file (the expected scores in tests/evaluation are
computed by hand from them, so edit both together).

- scienceqa/problems.json, pid_splits.json, {train,test}/<pid>/image.png: six test questions covering every table
  column once or twice, five train and three val questions, shaped like the real release (see `scienceqa`);
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
    question,
    choices,
    answer,
    subject,
    grade,
    hint="",
    with_image=False,
    lecture="",
    solution="",
    split="test",
    task="closed choice",
):
    # The fields and their order of a real problems.json entry (lupantech/ScienceQA data/scienceqa/problems.json).
    return {
        "question": question,
        "choices": choices,
        "answer": answer,
        "hint": hint,
        "image": "image.png" if with_image else None,
        "task": task,
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
    """ScienceQA in its original layout, shaped like the real release: lectures and solutions with newlines (and
    empty ones), hints with newlines, runs of spaces and padding, a question over several lines, five options,
    non-ASCII text, a lecture holding a literal backslash-n, an image named in problems.json whose file is missing,
    and every split name of the real pid_splits.json. A few val entries are edge cases the original converter treats
    in its own way ("Question: " / "Answer: " inside the text); tests/assets/evaluation/scienceqa/original/ holds
    what the original LLaVA scripts make of all of it (make_original_outputs.py)."""
    folder = HERE / "scienceqa"
    problems = {
        "1": problem(
            "Which animal is shown?",
            ["cat", "dog"],
            1,
            "natural science",
            3,
            with_image=True,
            lecture="Mammals have fur or hair.\nDogs and cats are mammals.",
            solution="Look at the picture.\nThe animal has floppy ears and a long snout: it is a dog.",
        ),
        "2": problem(
            "Which is a solid?",
            ["rock", "milk", "air"],
            0,
            "natural science",
            8,
            hint="Solids keep their shape.\nMilk  and air do not.",
            lecture="Matter can be a solid, a liquid or a gas.",
            solution="A rock keeps its shape. It is a solid.",
        ),
        "3": problem(
            "Which state is farthest north?",
            ["Texas", "Ohio", "Maine"],
            2,
            "social science",
            5,
            hint="Look at the map.",
            with_image=True,
            lecture="Maps show places.\n\nNorth is toward the top of most maps.",
        ),
        "4": problem("What is the capital of France?", ["Rome", "Paris", "Berlin"], 1, "social science", 10),
        "5": problem(
            "Which word is a noun?", ["table", "run"], 0, "language science", 2, lecture="A noun names a thing."
        ),
        "6": problem(
            "Which letter is shown?",
            ["Q", "R"],
            1,
            "language science",
            7,
            with_image=True,
            solution="The letter has a straight leg: it is R.",
        ),
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
        "9": problem(
            "What is the temperature of a cup of hot cocoa?",
            ["50°C", "80°C", "5°C", "20°C", "100°C"],
            1,
            "natural science",
            6,
            hint="  Figure: a thermometer in a cup.  ",
            with_image=True,
            lecture="Temperature is measured in degrees.\\nHot drinks are often 60–90°C.",
            solution="The best estimate is 80°C.",
            split="train",
        ),
        "10": problem(
            "Which figure of speech is used in this text?\n"
            "Sing, O goddess, the anger of Achilles son of Peleus.\n—Homer, The Iliad",
            ["chiasmus", "apostrophe"],
            1,
            "language science",
            11,
            lecture="Figures of speech use language in a nonliteral way.\nApostrophe is a direct address to an "
            "absent person or a nonhuman thing.\nOh, little bird, what makes you sing?",
            solution="The text uses apostrophe.\nO goddess is a direct address to a goddess.",
            split="train",
        ),
        "11": problem(
            "Is the following trait inherited or acquired?\nMia has a scar on her left knee.",
            ["acquired", "inherited"],
            0,
            "natural science",
            7,
            hint="Read the text.   Then answer.",
            lecture="Some traits are inherited.   Others are acquired.",
            solution="",
            split="train",
            task="yes or no",
        ),
        "12": problem(
            "Which month is the coldest in Chicago?",
            ["January", "July", "October", "April"],
            0,
            "natural science",
            5,
            with_image=True,  # named in problems.json, but no file: the converter only references it
            lecture="Climate is the pattern of weather.",
            solution="January has the lowest average temperature.",
            split="val",
        ),
        "13": problem(
            "Read the card. Question: which item is heavier?",
            ["a brick", "a feather"],
            0,
            "natural science",
            3,
            lecture="Answer: weigh both. Heavier things push down more.",
            solution="A brick is heavier than a feather.",
            split="val",
        ),
        "14": problem(
            "Which tense does the sentence use?\nI will walk home.",
            ["past tense", "present tense", "future tense"],
            2,
            "language science",
            4,
            hint="   ",
            split="val",
        ),
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "problems.json").write_text(json.dumps(problems, indent=1) + "\n")
    train, val, test = ["7", "8", "9", "10", "11"], ["12", "13", "14"], ["1", "2", "3", "4", "5", "6"]
    splits = {
        "train": train,
        "val": val,
        "test": test,
        "trainval": train + val,
        "minitrain": ["7", "9"],
        "minival": ["12"],
        "minitest": ["1", "3"],
    }
    (folder / "pid_splits.json").write_text(json.dumps(splits) + "\n")
    for split in ("train", "val", "test"):
        for pid in splits[split]:
            if problems[pid]["image"] and pid != "12":
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
