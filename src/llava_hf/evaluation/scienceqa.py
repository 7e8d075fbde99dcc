# llava-hf scienceqa-to-llava --data path/to/ScienceQA/data/scienceqa --image-folder path/to/ScienceQA/train --split train --output-dir sqa_llava
"""ScienceQA (Lu et al. 2022): multiple-choice science questions, scored the way LLaVA's paper reports them.

Data layouts read by `load_examples` / `build_task`:
- the Hub layout (e.g. `derek-thomas/ScienceQA`): one row per question with columns image (PIL or None), question,
  choices (list), answer (index), hint, task, grade ("grade1".."grade12"), subject, topic, category, skill, lecture,
  solution; ids are the row indices;
- the original release: `problems.json` ({pid: {...the same fields, "image": "image.png" or null, "split"}}) +
  `pid_splits.json` ({split: [pid, ...]}) + an image folder holding `<pid>/image.png` for that split; ids are pids.

Prompt formats (LLAVA.md §9):
- `zero_shot` (LLaVA-1.5's SQA-IMG): "Context: {hint}" when there is one, the question, "A. {choice}" lines, then
  "Answer with the option's letter from the given choices directly.";
- the fine-tuning formats of the LLaVA paper's 90.92 run, named `<input>-<output>` like the original converter:
  input `QCM` ("Question: ...\\nContext: ...\\nOptions: (A) ... (B) ...") or `CQM` (context first); output `A`
  ("Answer: The answer is B."), `LEA` (lecture, explanation, then the answer; the recipe's choice), `EA`, `LA`,
  `ELA`, `AL`, `AE`, `ALE`, `AEL`. Evaluation uses the input part; `convert_to_llava` writes both parts.

Scoring: the answer is read by `parse_choice` ("B", "B.", "(B)", "B. text", "The answer is B.", or exactly an
option's text); anything else counts as wrong and is listed under `unparseable`. The table has the paper's columns
NAT/SOC/LAN (subject), TXT/IMG/NO (context: text hint / image / neither; a question with both counts in TXT and IMG),
G1-6/G7-12 (grade) and Avg, in percent; `IMG-subset accuracy` is LLaVA-1.5's SQA-IMG figure (the IMG column).
"""

from __future__ import annotations

import io
import json
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..utils.io import atomic_write
from .task import Example, Outcome, Task, load_rows, require_columns

LETTERS = string.ascii_uppercase
ZERO_SHOT_INSTRUCTION = "Answer with the option's letter from the given choices directly."
HUB_COLUMNS = ["image", "question", "choices", "answer", "hint", "grade", "subject", "lecture", "solution"]
SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
TABLE_COLUMNS = ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"]

# Output formats of the fine-tuning converter: the answer sentence, the lecture and the explanation ("solution"),
# in the order each format names them.
OUTPUT_FORMATS = {
    "A": "Answer: The answer is {answer}.",
    "AL": "Answer: The answer is {answer}. BECAUSE: {solution}",
    "AE": "Answer: The answer is {answer}. BECAUSE: {lecture}",
    "ALE": "Answer: The answer is {answer}. BECAUSE: {lecture} {solution}",
    "AEL": "Answer: The answer is {answer}. BECAUSE: {solution} {lecture}",
    "LA": "Answer: {lecture} The answer is {answer}.",
    "EA": "Answer: {solution} The answer is {answer}.",
    "LEA": "Answer: {lecture} {solution} The answer is {answer}.",
    "ELA": "Answer: {solution} {lecture} The answer is {answer}.",
}
INPUT_FORMATS = {
    "QCM": "Question: {question}\nContext: {context}\nOptions: {options}",
    "CQM": "Context: {context}\nQuestion: {question}\nOptions: {options}",
}
PROMPT_FORMATS = ("zero_shot",) + tuple(f"{i}-{o}" for i in INPUT_FORMATS for o in OUTPUT_FORMATS)


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_examples(data, split: str = "test", image_folder: str | None = None, prompt_format: str = "zero_shot"):
    """ScienceQA questions of one split as `Example`s (answer = the gold letter), from either layout (module doc)."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown ScienceQA prompt format {prompt_format!r}; choose one of {PROMPT_FORMATS}.")
    path = Path(data) if isinstance(data, (str, Path)) else None
    if path is not None and (path / "problems.json").exists():
        problems = _original_problems(path, split, image_folder)
    else:
        problems = _hub_problems(data, split)
    return [make_example(pid, problem, prompt_format) for pid, problem in problems]


def _original_problems(folder: Path, split: str, image_folder: str | None):
    problems = json.loads((folder / "problems.json").read_text())
    splits_file = folder / "pid_splits.json"
    if not splits_file.exists():
        raise FileNotFoundError(f"{splits_file} is missing; the original layout needs problems.json + pid_splits.json.")
    splits = json.loads(splits_file.read_text())
    if split not in splits:
        raise ValueError(f"{splits_file} has no split {split!r}; it has {sorted(splits)}.")
    image_root = Path(image_folder) if image_folder else folder / split
    for pid in splits[split]:
        if pid not in problems:
            raise ValueError(f"pid {pid!r} of split {split!r} is not in problems.json.")
        problem = dict(problems[pid])
        if problem.get("image"):
            problem["image_file"] = f"{pid}/{problem['image']}"
            problem["image"] = image_root / problem["image_file"]  # checked before generation, not needed to score
        else:
            problem["image"] = None
        yield str(pid), problem


def _hub_problems(data, split: str):
    rows = load_rows(data, split)
    require_columns(rows, HUB_COLUMNS, "ScienceQA Hub")
    for index, row in enumerate(rows):
        yield str(index), row


def make_example(pid: str, problem: dict, prompt_format: str = "zero_shot") -> Example:
    """One ScienceQA question as an `Example`; also the way to build in-memory multiple-choice tasks.

    `problem` has question, choices (list), answer (index of the right choice), and optionally hint, subject
    ("natural science" | "social science" | "language science"), grade ("grade1".."grade12"), image (PIL image,
    path or None), lecture, solution.
    """
    choices = [str(choice) for choice in problem["choices"]]
    answer = int(problem["answer"])
    if not 0 <= answer < len(choices) or len(choices) > len(LETTERS):
        raise ValueError(f"question {pid}: answer index {answer} does not fit its {len(choices)} choices.")
    grade = str(problem.get("grade") or "")
    metadata = {
        "question": problem["question"],
        "choices": choices,
        "hint": (problem.get("hint") or "").strip(),
        "subject": problem.get("subject") or "",
        "grade": int(grade.removeprefix("grade")) if grade.removeprefix("grade").isdigit() else None,
        "has_image": problem.get("image") is not None,
        "lecture": problem.get("lecture") or "",
        "solution": problem.get("solution") or "",
        "image_file": problem.get("image_file"),
    }
    return Example(
        id=pid,
        prompt=build_prompt(metadata, prompt_format),
        images=[problem["image"]] if problem.get("image") is not None else [],
        answer=LETTERS[answer],
        metadata=metadata,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Prompts


def build_prompt(problem: dict, prompt_format: str = "zero_shot") -> str:
    """The user text for one question (`problem` has question, choices, hint); images are added before it."""
    if prompt_format == "zero_shot":
        lines = [f"Context: {problem['hint']}"] if problem["hint"] else []
        lines.append(problem["question"])
        lines += [f"{LETTERS[index]}. {choice}" for index, choice in enumerate(problem["choices"])]
        lines.append(ZERO_SHOT_INSTRUCTION)
        return "\n".join(lines)
    input_format = prompt_format.split("-")[0]
    options = " ".join(f"({LETTERS[index]}) {choice}" for index, choice in enumerate(problem["choices"]))
    text = INPUT_FORMATS[input_format].format(
        question=problem["question"], context=problem["hint"] or "N/A", options=options
    )
    return _squeeze(text)


def build_target(problem: dict, answer_letter: str, prompt_format: str) -> str:
    """The training answer of a fine-tuning format (`QCM-LEA` -> "Answer: {lecture} {solution} The answer is B.")."""
    output_format = prompt_format.split("-")[1]
    # The original keeps each text on one line: newlines inside lectures/solutions become a literal "\n".
    text = OUTPUT_FORMATS[output_format].format(
        answer=answer_letter,
        lecture=problem["lecture"].replace("\n", "\\n"),
        solution=problem["solution"].replace("\n", "\\n"),
    )
    text = _squeeze(text)
    return text.removesuffix("BECAUSE:").strip()


def _squeeze(text: str) -> str:
    return re.sub(r" {2,}", " ", text).strip()


# ---------------------------------------------------------------------------------------------------------------------
# Parsing and scoring


def parse_choice(text: str, choices: list[str]) -> str | None:
    """The option letter a free-text answer picks, or None when it cannot be read.

    Accepted: a bare letter ("B", "B.", "(B)", "B)"), a leading letter followed by punctuation and text
    ("B. blue", "(B) blue"), "The answer is B." (every such phrase in the text must agree), or exactly one option's
    text ("blue", "The answer is blue."). A letter beyond the question's options is unparseable. A leading "A "
    without punctuation is not read as a letter: it is the article in "A cat ...".
    """
    valid = LETTERS[: len(choices)]
    answer = text.strip()
    bare = re.fullmatch(r"\(?([A-Z])\)?[.:)]?", answer)
    if bare:
        return bare.group(1) if bare.group(1) in valid else None
    leading = re.match(r"(?:\(([A-Z])\)|([A-Z])[.:)])\s", answer)
    if leading:
        letter = leading.group(1) or leading.group(2)
        return letter if letter in valid else None
    stated = set(re.findall(r"[Tt]he answer is:?\s*\(?([A-Z])\)?(?![A-Za-z])", answer))
    if len(stated) == 1:
        letter = stated.pop()
        return letter if letter in valid else None
    if len(stated) > 1:
        return None
    return _match_option_text(answer, choices)


def _match_option_text(answer: str, choices: list[str]) -> str | None:
    def normalise(value: str) -> str:
        return " ".join(value.lower().strip().rstrip(".").split())

    candidate = normalise(re.sub(r"^(answer:\s*)?(the answer is:?\s*)", "", answer.strip(), flags=re.IGNORECASE))
    matches = [index for index, choice in enumerate(choices) if normalise(choice) == candidate]
    return LETTERS[matches[0]] if len(matches) == 1 else None


def category_of(metadata: dict) -> dict[str, bool]:
    """Which table columns one question counts in (besides Avg)."""
    has_text = bool(metadata["hint"])
    grade = metadata["grade"]
    return {
        **{column: metadata["subject"] == subject for column, subject in SUBJECTS.items()},
        "TXT": has_text,
        "IMG": metadata["has_image"],
        "NO": not has_text and not metadata["has_image"],
        "G1-6": grade is not None and 1 <= grade <= 6,
        "G7-12": grade is not None and 7 <= grade <= 12,
    }


def score(outcomes: list[Outcome]) -> dict:
    """Accuracy (percent) per paper column; unparseable and missing answers count as wrong."""
    totals = {column: [0, 0] for column in TABLE_COLUMNS}  # column -> [correct, count]
    unparseable = []
    for outcome in outcomes:
        correct = outcome.parsed is not None and outcome.parsed == outcome.example.answer
        if outcome.text is not None and outcome.parsed is None:
            unparseable.append({"question_id": outcome.example.id, "text": outcome.text})
        membership = category_of(outcome.example.metadata)
        membership["Avg"] = True
        for column, member in membership.items():
            if member:
                totals[column][0] += int(correct)
                totals[column][1] += 1
    accuracy = {column: 100.0 * right / count if count else None for column, (right, count) in totals.items()}
    metrics = {column: value for column, value in accuracy.items() if value is not None}
    if accuracy["IMG"] is not None:
        metrics["IMG-subset accuracy"] = accuracy["IMG"]
    return {
        "metrics": metrics,
        "counts": {column: {"correct": right, "total": count} for column, (right, count) in totals.items()},
        "unparseable": unparseable,
        "table": {
            "columns": TABLE_COLUMNS,
            "rows": [["-" if accuracy[column] is None else accuracy[column] for column in TABLE_COLUMNS]],
        },
    }


def build_task(
    data,
    split: str = "test",
    image_folder: str | None = None,
    prompt_format: str = "zero_shot",
    limit: int | None = None,
    max_new_tokens: int | None = None,
) -> Task:
    """The ScienceQA task. Zero-shot answers are a letter (16 tokens suffice); LEA-style answers carry a lecture."""
    examples = load_examples(data, split, image_folder, prompt_format)[:limit]
    default_tokens = 16 if prompt_format == "zero_shot" or prompt_format.endswith("-A") else 1024
    return Task(
        name="scienceqa",
        examples=examples,
        score=score,
        parse=lambda text, example: parse_choice(text, example.metadata["choices"]),
        max_new_tokens=max_new_tokens or default_tokens,
        dataset_type="derek-thomas/ScienceQA",
        dataset_name="ScienceQA",
        dataset_split=split,
    )


# ---------------------------------------------------------------------------------------------------------------------
# Converter: ScienceQA -> LLaVA training JSON


def convert_to_llava(examples: list[Example], output_dir: str | Path, prompt_format: str = "QCM-LEA") -> Path:
    """Write `llava_<format>.json` (LLAVA.md §3 records) for fine-tuning on ScienceQA; returns its path.

    Each record: `{"id", "image"?, "conversations": [human: "<image>\\n" + question/context/options, gpt: the
    answer with lecture and explanation]}`. Images of the original layout are referenced as `<pid>/image.png`
    (train with the split's image folder); in-memory (Hub) images are saved to `output_dir/images/<id>.png` and
    referenced as `images/<id>.png` (train with `output_dir` as the image folder).
    """
    if prompt_format == "zero_shot" or prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"training needs a fine-tuning format such as QCM-LEA; choose one of {PROMPT_FORMATS[1:]}.")
    output_dir = Path(output_dir)
    records = []
    for example in examples:
        question = build_prompt(example.metadata, prompt_format)
        record = {"id": example.id}
        if example.images:
            record["image"] = _image_reference(example, output_dir)
            question = "<image>\n" + question
        record["conversations"] = [
            {"from": "human", "value": question},
            {"from": "gpt", "value": build_target(example.metadata, example.answer, prompt_format)},
        ]
        records.append(record)
    path = output_dir / f"llava_{prompt_format}.json"
    atomic_write(path, json.dumps(records, indent=1, ensure_ascii=False))
    return path


def _image_reference(example: Example, output_dir: Path) -> str:
    if example.metadata.get("image_file"):
        return example.metadata["image_file"]
    name = f"images/{example.id}.png"
    target = output_dir / name
    if not target.exists():
        encoded = io.BytesIO()
        example.images[0].convert("RGB").save(encoded, format="PNG")
        atomic_write(target, encoded.getvalue())
    return name


@dataclass
class ConvertArguments:
    """`llava-hf scienceqa-to-llava`: the ScienceQA train split as LLaVA fine-tuning data."""

    data: str = field(metadata={"help": "ScienceQA: folder with problems.json + pid_splits.json, parquet, or Hub id"})
    output_dir: str = field(metadata={"help": "where llava_<format>.json (and images/ for Hub data) are written"})
    split: str = field(default="train", metadata={"help": "split to convert"})
    image_folder: str | None = field(
        default=None, metadata={"help": "original layout: folder with <pid>/image.png (default <data>/<split>)"}
    )
    prompt_format: str = field(default="QCM-LEA", metadata={"help": f"one of {', '.join(PROMPT_FORMATS[1:])}"})


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    (arguments,) = HfArgumentParser(ConvertArguments).parse_args_into_dataclasses(args=argv)
    examples = load_examples(arguments.data, arguments.split, arguments.image_folder, arguments.prompt_format)
    path = convert_to_llava(examples, arguments.output_dir, arguments.prompt_format)
    print(f"wrote {len(examples)} records to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
