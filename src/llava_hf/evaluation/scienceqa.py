"""ScienceQA (Lu et al. 2022): multiple-choice science questions, scored the way LLaVA's paper reports them.

Data layouts read by `load_examples` / `build_task`:
- the Hub layout (e.g. `derek-thomas/ScienceQA`): one row per question with columns image (PIL or None), question,
  choices (list), answer (index), hint, task, grade ("grade1".."grade12"), subject, topic, category, skill, lecture,
  solution; ids are the row indices;
- the original release: `problems.json` ({pid: {...the same fields, "image": "image.png" or null, "split"}}) +
  `pid_splits.json` ({split: [pid, ...]}) + an image folder holding `<pid>/image.png` for that split; ids are pids.

Prompts are the original LLaVA repository's, byte for byte (haotian-liu/LLaVA `scripts/convert_sqa_to_llava.py`,
`scripts/convert_sqa_to_llava_base_prompt.py`, `llava/eval/model_vqa_science.py`):
- the converter builds each question as `{input}` / `{input}\n<image>` and its answer as `{output}`, where input is
  `QCM` ("Question: {question}\nContext: {hint or N/A}\nOptions: (A) x (B) y") or `CQM` (context first) and output is
  `A` ("Answer: The answer is B."), `LEA` (lecture, explanation, answer: the paper's fine-tuning recipe), `EA`, `LA`,
  `ELA`, `AL`, `AE`, `ALE`, `AEL`; formats are named `<input>-<output>`. It then removes "Question: " from inputs
  and "Answer: " from outputs that start with them, restores the newlines of lectures and solutions, collapses
  double spaces once (three spaces become two) and strips, all as the original does, quirks included (an empty
  lecture and solution leave a leading space: " The answer is B.");
- evaluation (`model_vqa_science.py`) removes `<image>` from that question, strips it and puts the image first
  (`<image>\n{text}`, which our chat templates render from the image part); `zero_shot` is LLaVA-1.5's SQA-IMG
  protocol (`scripts/v1_5/eval/sqa.sh`): the `CQM-A` question plus `--single-pred-prompt`'s
  "\nAnswer with the option's letter from the given choices directly."; the fine-tuning formats are evaluated on
  their own question (`scripts/sqa_eval_batch.sh`, no suffix).
tests/assets/evaluation/scienceqa_original/ holds what the original scripts write for a fixture shaped like the real
data, and the tests compare every format with it.

Scoring: the answer is read by `parse_choice` ("B", "B.", "(B)", "B. text", "The answer is B.", or exactly an
option's text); anything else counts as wrong and is listed under `unparseable`. This is stricter about what counts
as an answer and wider about how it may be written than the original `llava/eval/eval_science_qa.py`, which takes
an exact option letter, a letter followed by ". ", or exactly one match of `The answer is ([A-Z]).` and scores
everything else as wrong. Deliberate differences (tested against that script's output): ours also reads "(B)",
"B)", "B.", "A:", "The answer is (C).", "the answer is B." in lower case, "The answer is B" at the end of the text,
an option's text ("Paris"), and a repeated but consistent "The answer is A. The answer is A."; ours does not read
"The answer is Bx" (the original's `.` matches any character). Letters beyond a question's options are wrong in
both. So our accuracy is the original's or higher, never on a different set of answers. The table has the paper's columns
NAT/SOC/LAN (subject), TXT/IMG/NO (context: text hint / image / neither; a question with both counts in TXT and IMG),
G1-6/G7-12 (grade) and Avg, in percent; `IMG-subset accuracy` is LLaVA-1.5's SQA-IMG figure (the IMG column).
"""

from __future__ import annotations

import io
import json
import re
import string
from pathlib import Path

from ..utils.io import atomic_write
from .rows import load_rows, require_columns
from .task import Example, Outcome, Task

LETTERS = string.ascii_uppercase
ZERO_SHOT_INSTRUCTION = "Answer with the option's letter from the given choices directly."
HUB_COLUMNS = ["image", "question", "choices", "answer", "hint", "grade", "subject", "lecture", "solution"]
SUBJECTS = {"NAT": "natural science", "SOC": "social science", "LAN": "language science"}
TABLE_COLUMNS = ["NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg"]

# The original's output formats (`create_one_example_chatbot` in convert_sqa_to_llava_base_prompt.py) and inputs.
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
    "QCM": "Question: {question}\nContext: {context}\nOptions: {options}\n",
    "CQM": "Context: {context}\nQuestion: {question}\nOptions: {options}\n",
}
PROMPT_FORMATS = ("zero_shot",) + tuple(f"{i}-{o}" for i in INPUT_FORMATS for o in OUTPUT_FORMATS)
ZERO_SHOT_QUESTION_FORMAT = "CQM-A"  # the question file of LLaVA-1.5's sqa.sh: llava_test_CQM-A.json


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
    # Default: LLaVA's layout (docs/ScienceQA.md: <base>/images/<split>), else <base>/<split>.
    image_root = Path(image_folder) if image_folder else folder / "images" / split
    if not image_folder and not image_root.is_dir():
        image_root = folder / split
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
        "answer": LETTERS[answer],
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
    """The user text of one question at evaluation (`problem`: `make_example`'s metadata); the image goes before it.

    As `model_vqa_science.py` makes it from the converter's question: `<image>` removed, stripped, and for
    `zero_shot` (`CQM-A` + `--single-pred-prompt`) the instruction appended after a newline.
    """
    question_format = ZERO_SHOT_QUESTION_FORMAT if prompt_format == "zero_shot" else prompt_format
    question, _ = build_conversation(problem, question_format)
    text = question.replace("<image>", "").strip()
    return text + "\n" + ZERO_SHOT_INSTRUCTION if prompt_format == "zero_shot" else text


def build_conversation(problem: dict, prompt_format: str, answer_letter: str | None = None) -> tuple[str, str]:
    """The (human, gpt) texts the original `convert_to_llava` writes for one question in a `<input>-<output>` format.

    `problem` is `make_example`'s metadata; `answer_letter` defaults to the gold one (`problem["answer"]`).
    """
    input_format, output_format = prompt_format.split("-")
    # get_lecture_text / get_solution_text write newlines as "\\n" and build_prompt_chatbot turns every "\\n" back into
    # a newline, so the net effect is that a literal backslash-n in the data becomes a newline too.
    lecture = problem["lecture"].replace("\\n", "\n")
    solution = problem["solution"].replace("\\n", "\n")
    options = " ".join(f"({LETTERS[index]}) {choice}" for index, choice in enumerate(problem["choices"]))
    question = INPUT_FORMATS[input_format].format(
        question=problem["question"], context=problem["hint"] or "N/A", options=options
    )
    answer = OUTPUT_FORMATS[output_format].format(
        answer=answer_letter or problem["answer"], lecture=lecture, solution=solution
    )
    question, answer = _tidy_like_the_original(question), _tidy_like_the_original(answer)
    # convert_to_llava: str.replace removes every occurrence, not only the leading one.
    if question.startswith("Question: "):
        question = question.replace("Question: ", "")
    if answer.startswith("Answer: "):
        answer = answer.replace("Answer: ", "")
    if problem["has_image"]:
        question = f"{question}\n<image>"
    return question, answer


def _tidy_like_the_original(text: str) -> str:
    """create_one_example_chatbot's clean-up: one pass of "  " -> " " (so three spaces become two), strip, and drop
    every "BECAUSE:" when the text ends with one (an empty lecture/solution after it)."""
    text = text.replace("  ", " ").strip()
    if text.endswith("BECAUSE:"):
        text = text.replace("BECAUSE:", "").strip()
    return text


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


def convert_to_llava(
    examples: list[Example], output_dir: str | Path, prompt_format: str = "QCM-LEA", split: str = "train"
) -> Path:
    """Write `llava_{split}_{format}.json` for fine-tuning on ScienceQA, as the original `convert_to_llava` does, and
    return its path. Same records, same bytes (2-space indent, ASCII escapes): `{"id", "image"?, "conversations":
    [{"from": "human", "value": question or question + "\\n<image>"}, {"from": "gpt", "value": answer}]}`.

    Images of the original layout are referenced as `<pid>/image.png` (train with the split's image folder);
    in-memory (Hub) images are saved to `output_dir/images/<id>.png` and referenced as `images/<id>.png` (train with
    `output_dir` as the image folder). `split` only names the file (`llava_test_CQM-A.json` is sqa.sh's question file).
    """
    if prompt_format == "zero_shot" or prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"training needs a fine-tuning format such as QCM-LEA; choose one of {PROMPT_FORMATS[1:]}.")
    output_dir = Path(output_dir)
    records = []
    for example in examples:
        question, answer = build_conversation(example.metadata, prompt_format)
        record = {"id": example.id}
        if example.images:
            record["image"] = _image_reference(example, output_dir)
        record["conversations"] = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
        records.append(record)
    path = output_dir / f"llava_{split}_{prompt_format}.json"
    atomic_write(path, json.dumps(records, indent=2))  # json.dump's defaults, as the original writes it
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
