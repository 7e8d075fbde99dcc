"""The evaluation task interface: examples -> prompts with images -> batched greedy generation -> parse -> score.

A benchmark is one `Task`: a list of `Example`s (id, user prompt, images, gold answer), a `parse` function that turns a
generated answer into what the benchmark compares (a letter, yes/no, ...), and a `score` function over all outcomes
that returns the benchmark's metrics and its table. Everything else is shared and lives here:

    task = scienceqa.build_task(data="derek-thomas/ScienceQA", split="test")         # or Task(...) from memory
    results = evaluate(task, model, processor, output_dir="runs/sqa")                 # generate, then score
    results = evaluate(task, predictions="answers.jsonl")                             # re-score a finished run

- Generation is greedy (the original `docs/Evaluation.md` and `llava/eval/`) and batched with left padding: a decoder-only model continues every row from
  its last real token, so a left-padded batch gives the same tokens as one-at-a-time generation, only faster.
- Each answer is appended to `predictions.jsonl` with flush + fsync as soon as its batch finishes; a rerun skips the
  ids already there (resume after a kill), and refuses a file whose prompts differ from the task's (a different run).
- The predictions format is the original LLaVA answer file's (`{"question_id", "prompt", "text", "model_id", ...}`),
  so files made by the original scripts or other tools are scored the same way.
- Any model that takes `input_ids`/`attention_mask`/`pixel_values` and has `generate` works: llava_hf's model and
  transformers' built-in `LlavaForConditionalGeneration` alike, each with its processor's chat template.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from ..utils.io import JsonlLog, atomic_write, numbered_jsonl

PREDICTIONS_FILE = "predictions.jsonl"
RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"


@dataclass
class Example:
    """One benchmark item.

    Args:
        id: unique within the task; written as `question_id` (int ids of original files are matched as strings).
        prompt: the user's text. Images are placed before it in the user turn, as in LLaVA (`<image>\\n{prompt}`).
        images: PIL images or paths to image files (opened when the example's batch is generated).
        answer: the gold answer in the form the task's `score` compares (a letter, "yes"/"no", a reference text).
        metadata: anything the score needs per example (category, grade, subject, context for a judge, ...).
    """

    id: str
    prompt: str
    images: list = field(default_factory=list)
    answer: Any = None
    metadata: dict = field(default_factory=dict)


@dataclass
class Outcome:
    """One example with the model's answer: `text` is None when the predictions lack the example, `parsed` is None
    when the text is missing or could not be parsed."""

    example: Example
    text: str | None
    parsed: Any


@dataclass
class Task:
    """A benchmark: examples plus how to read and score answers.

    Args:
        name: short name, used in file names and the model card (`scienceqa`, `pope`, `llava_bench_coco`).
        examples: the items to answer; ids must be unique.
        score: `score(outcomes) -> dict` with at least `metrics` (flat name -> number) and `table`
            (`{"columns": [...], "rows": [[...], ...]}`, rendered as the markdown table). It may add anything
            JSON-serializable (per-category counts, lists of unparseable ids, judge settings).
        parse: `parse(text, example) -> value or None` (None = unparseable); the identity by default.
        max_new_tokens: generation budget per answer.
        dataset_type / dataset_name / dataset_split: how the results are filed in a model card's `model-index`.
        system_prompt: an optional system message put before the user turn.
    """

    name: str
    examples: list[Example]
    score: Callable[[list[Outcome]], dict]
    parse: Callable[[str, Example], Any] = lambda text, example: text
    max_new_tokens: int = 128
    dataset_type: str = ""
    dataset_name: str = ""
    dataset_split: str = "test"
    system_prompt: str | None = None

    def __post_init__(self):
        seen = set()
        for example in self.examples:
            if example.id in seen:
                raise ValueError(f"task {self.name!r}: example id {example.id!r} occurs twice; ids must be unique.")
            seen.add(example.id)


# ---------------------------------------------------------------------------------------------------------------------
# Predictions files: appended + fsync'd while generating (utils.io.JsonlLog), a torn last line tolerated.


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """Read a predictions JSONL (ours or the original LLaVA answer file) into `{str(question_id): record}`.

    Every line must be a JSON object with `question_id` and `text`; a malformed line raises with its line number,
    except a torn last line (a run killed mid-write), which is ignored and regenerated on resume.
    A question_id that appears twice keeps its last record (a resumed run never writes one twice).
    """
    records: dict[str, dict] = {}
    for number, record in numbered_jsonl(path):
        if not isinstance(record, dict) or "question_id" not in record or "text" not in record:
            raise ValueError(
                f"{path}:{number} has no 'question_id' and 'text'; a predictions file holds one "
                '{"question_id": ..., "text": "<the model\'s answer>"} object per line.'
            )
        if not isinstance(record["text"], str):
            raise ValueError(f"{path}:{number}: 'text' must be a string, got {type(record['text']).__name__}.")
        records[str(record["question_id"])] = record
    return records


# ---------------------------------------------------------------------------------------------------------------------
# Loading Hub-layout data


def load_rows(data, split: str):
    """A `datasets.Dataset` for one split of Hub-layout data.

    `data` may be a `Dataset`/`DatasetDict` already in memory, a folder written by `save_to_disk`, a folder of
    parquet files (the Hub's `data/<split>-*.parquet` layout; files whose name contains the split are used, all files
    if none does), a single parquet file, or a Hub repo id (read from the local cache when offline).
    """
    import datasets

    if isinstance(data, datasets.DatasetDict):
        return _pick_split(data, split, "the DatasetDict")
    if isinstance(data, datasets.Dataset):
        return data
    path = Path(data)
    if path.is_dir() and ((path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        return _pick_split(loaded, split, str(path)) if isinstance(loaded, datasets.DatasetDict) else loaded
    if path.is_dir():
        files = sorted(str(file) for file in path.rglob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{path} holds no parquet files and no dataset saved with save_to_disk.")
        chosen = [file for file in files if split in Path(file).name] or files
        return datasets.load_dataset("parquet", data_files=chosen, split="train")
    if path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    return datasets.load_dataset(str(data), split=split)


def _pick_split(dataset_dict, split: str, where: str):
    if split not in dataset_dict:
        raise ValueError(f"{where} has no split {split!r}; it has {sorted(dataset_dict)}.")
    return dataset_dict[split]


def require_columns(rows, columns: list[str], layout: str) -> None:
    """Raise naming the missing columns when `rows` lacks any of `columns`."""
    missing = [column for column in columns if column not in rows.column_names]
    if missing:
        raise ValueError(
            f"the data lacks column(s) {missing} of the {layout} layout (it has {rows.column_names}); pass data in "
            "that layout or the original files."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Generation


def load_image(image) -> Image.Image:
    """A PIL image from a PIL image or a path, converted the way LLaVA sees it (`to_rgb`)."""
    from ..processing import to_rgb  # here, not at the top: scoring a predictions file needs no transformers

    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check the image folder passed with the data.")
    with Image.open(path) as opened:
        opened.load()
        return to_rgb(opened)


def build_conversation(example: Example, system_prompt: str | None = None) -> list[dict]:
    """The chat messages for one example: optional system turn, then one user turn with the images first."""
    content = [{"type": "image"} for _ in example.images] + [{"type": "text", "text": example.prompt}]
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return messages


def render_prompts(task: Task, processor, examples: list[Example]) -> list[str]:
    """Each example's full prompt text as the processor's chat template renders it, ending with the assistant cue."""
    return [
        processor.apply_chat_template(build_conversation(example, task.system_prompt), add_generation_prompt=True)
        for example in examples
    ]


def generate_answers(model, processor, prompts: list[str], images: list[list], max_new_tokens: int = 128) -> list[str]:
    """Greedy answers for one batch of rendered prompts (with their images), left-padded, decoded without specials."""
    import torch

    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every row must end at its last real token; see the module docstring
    try:
        flat_images = [load_image(image) for sample_images in images for image in sample_images]
        # Templates that write BOS themselves would get a second one from the tokenizer (transformers'
        # apply_chat_template makes the same check).
        bos = tokenizer.bos_token
        add_special_tokens = not (bos and all(prompt.startswith(bos) for prompt in prompts))
        inputs = processor(
            images=flat_images or None,
            text=prompts,
            padding=True,
            return_tensors="pt",
            add_special_tokens=add_special_tokens,
        )
    finally:
        tokenizer.padding_side = previous_side
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_predictions(
    task: Task,
    model,
    processor,
    predictions_path: str | os.PathLike,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Answer every example not yet in `predictions_path`, appending one record per answer; returns all records.

    Examples are batched longest prompt first, so a batch holds prompts of similar length and little padding.
    Raises if the file holds ids the task does not have or a prompt that differs from the task's (another run's file).
    """
    max_new_tokens = max_new_tokens or task.max_new_tokens
    model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    predictions_path = Path(predictions_path)
    done = read_predictions(predictions_path) if predictions_path.exists() else {}
    prompts = dict(zip((example.id for example in task.examples), render_prompts(task, processor, task.examples)))
    _check_same_run(task, done, prompts, predictions_path)
    pending = [example for example in task.examples if example.id not in done]
    pending.sort(key=lambda example: len(prompts[example.id]), reverse=True)
    _check_image_files(pending)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(task.examples), initial=len(done), desc=task.name, unit="ex", disable=not progress)
    with JsonlLog(predictions_path) as writer:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            texts = generate_answers(
                model,
                processor,
                [prompts[example.id] for example in batch],
                [example.images for example in batch],
                max_new_tokens=max_new_tokens,
            )
            records = [
                {
                    "question_id": example.id,
                    "prompt": prompts[example.id],
                    "text": text,
                    "model_id": model_id,
                    "metadata": {"task": task.name, "decoding": "greedy", "max_new_tokens": max_new_tokens},
                }
                for example, text in zip(batch, texts)
            ]
            writer.append(*records)
            done.update((record["question_id"], record) for record in records)
            bar.update(len(batch))
    bar.close()
    return done


def _check_image_files(examples: list[Example]) -> None:
    """Fail before the first batch, not hours into a run, when image files are missing (scoring needs none)."""
    missing = [
        (example.id, image)
        for example in examples
        for image in example.images
        if not isinstance(image, Image.Image) and not Path(image).is_file()
    ]
    if missing:
        question_id, image = missing[0]
        raise FileNotFoundError(
            f"{len(missing)} image file(s) do not exist, e.g. {image} of question {question_id!r}; pass the folder "
            "holding the benchmark's images (--image-folder)."
        )


def _check_same_run(task: Task, done: dict[str, dict], prompts: dict[str, str], path: Path) -> None:
    unknown = [question_id for question_id in done if question_id not in prompts]
    if unknown:
        raise ValueError(
            f"{path} holds {len(unknown)} answer(s) for ids that task {task.name!r} does not have (e.g. "
            f"{unknown[:3]}); it belongs to another dataset or split: use another output folder."
        )
    changed = [qid for qid, record in done.items() if "prompt" in record and record["prompt"] != prompts[qid]]
    if changed:
        raise ValueError(
            f"{path} was written with different prompts (e.g. id {changed[0]!r}: a different prompt format, chat "
            "template or system prompt); use another output folder or delete the file to start over."
        )


# ---------------------------------------------------------------------------------------------------------------------
# Scoring and results


def score_task(task: Task, predictions: dict[str, dict], ignore_extra_ids: bool = False) -> dict:
    """Parse each example's answer and score the task; examples without an answer count as wrong and are listed.

    Raises if `predictions` answers ids the task does not have (scoring the wrong split would silently drop them),
    unless `ignore_extra_ids`: then those answers are left out and listed under `ignored_ids`.
    """
    ids = {example.id for example in task.examples}
    unknown = sorted(question_id for question_id in predictions if question_id not in ids)
    if unknown and not ignore_extra_ids:
        raise ValueError(
            f"the predictions answer {len(unknown)} question id(s) that task {task.name!r} does not have "
            f"(e.g. {unknown[:3]}); pass the data and split the predictions were made on, or --ignore-extra-ids "
            "to score only the task's ids."
        )
    outcomes = []
    for example in task.examples:
        record = predictions.get(example.id)
        text = None if record is None else record["text"]
        outcomes.append(Outcome(example, text, None if text is None else task.parse(text, example)))
    results = task.score(outcomes)
    missing = [outcome.example.id for outcome in outcomes if outcome.text is None]
    model_ids = sorted({str(record.get("model_id")) for record in predictions.values() if record.get("model_id")})
    return {
        "task": task.name,
        "dataset": {"type": task.dataset_type, "name": task.dataset_name, "split": task.dataset_split},
        "num_examples": len(task.examples),
        "num_answered": len(task.examples) - len(missing),
        "missing": missing,
        **({"ignored_ids": unknown} if unknown else {}),
        "model_ids": model_ids,
        **results,
    }


def markdown_table(results: dict) -> str:
    """The task's table as GitHub markdown, numbers with two decimals, preceded by a heading naming the task."""
    table = results["table"]

    def cell(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    lines = [
        f"### {results['task']} ({results['dataset'].get('split') or 'all'}, {results['num_answered']}/"
        f"{results['num_examples']} answered)",
        "",
        "| " + " | ".join(table["columns"]) + " |",
        "|" + "|".join("---" for _ in table["columns"]) + "|",
    ]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in table["rows"]]
    return "\n".join(lines) + "\n"


def write_results(results: dict, output_dir: str | os.PathLike) -> None:
    """`results.json` (everything) and `results.md` (the table), each written atomically."""
    output_dir = Path(output_dir)
    atomic_write(output_dir / RESULTS_FILE, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write(output_dir / TABLE_FILE, markdown_table(results))


def evaluate(
    task: Task,
    model=None,
    processor=None,
    output_dir: str | os.PathLike | None = None,
    predictions: str | os.PathLike | None = None,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    model_id: str | None = None,
    progress: bool = True,
    ignore_extra_ids: bool = False,
) -> dict:
    """Run a task end to end and return its results (also written to `output_dir` when given).

    With `model` and `processor`: generate into `output_dir/predictions.jsonl` (resuming it), then score.
    With `predictions` (a JSONL file) and no model: score that file as it is (`ignore_extra_ids`: see `score_task`).
    """
    if predictions is not None:
        if model is not None:
            raise ValueError("pass either a model (to generate answers) or a predictions file (to score), not both.")
        records = read_predictions(predictions)
    else:
        if model is None or processor is None:
            raise ValueError("evaluate needs a model and its processor, or a predictions file to score.")
        if output_dir is None:
            raise ValueError("evaluate needs output_dir to keep predictions.jsonl (that is what makes runs resumable).")
        records = generate_predictions(
            task,
            model,
            processor,
            Path(output_dir) / PREDICTIONS_FILE,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            model_id=model_id,
            progress=progress,
        )
    results = score_task(task, records, ignore_extra_ids)
    if output_dir is not None:
        write_results(results, output_dir)
    return results


# ---------------------------------------------------------------------------------------------------------------------
# Model card


def add_results_to_model_card(
    readme_path: str | os.PathLike, results: list[dict] | dict, model_name: str, task_type: str = "image-text-to-text"
) -> str:
    """Add each result's `metrics` to the `model-index` metadata of a model card (README.md), creating it if needed.

    One `EvalResult` per metric, filed under the result's dataset type/name/split; an existing entry for the same
    dataset, split and metric is replaced (re-evaluating updates the card instead of duplicating it). The card text
    below the metadata is kept. Returns the new README text, which is also written (atomically) to `readme_path`.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    readme_path = Path(readme_path)
    results = [results] if isinstance(results, dict) else list(results)
    if readme_path.exists():
        card = ModelCard(readme_path.read_text(encoding="utf-8"), ignore_metadata_errors=False)
    else:
        card = ModelCard(f"---\n---\n\n# {model_name}\n")
    data: ModelCardData = card.data
    existing = list(data.eval_results or [])
    new = []
    for result in results:
        dataset = result["dataset"]
        if not dataset.get("type"):
            raise ValueError(f"results of task {result['task']!r} name no dataset type; set Task.dataset_type.")
        for metric, value in result["metrics"].items():
            new.append(
                EvalResult(
                    task_type=task_type,
                    dataset_type=dataset["type"],
                    dataset_name=dataset.get("name") or dataset["type"],
                    dataset_split=dataset.get("split") or None,
                    metric_type=metric,
                    metric_name=f"{result['task']} {metric}",
                    metric_value=value,
                )
            )
    replaced = {(item.dataset_type, item.dataset_split, item.metric_type) for item in new}
    kept = [item for item in existing if (item.dataset_type, item.dataset_split, item.metric_type) not in replaced]
    data.eval_results = kept + new
    data.model_name = data.model_name or model_name
    text = str(card)
    atomic_write(readme_path, text)
    return text
