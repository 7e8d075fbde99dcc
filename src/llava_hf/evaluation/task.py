"""The evaluation task interface: examples -> prompts with images -> batched greedy generation -> parse -> score.

A benchmark is one `Task`: a list of `Example`s (id, user prompt, images, gold answer), a `parse` function that turns a
generated answer into what the benchmark compares (a letter, yes/no, ...), and a `score` function over all outcomes
that returns the benchmark's metrics and its table. This file holds those three dataclasses; what every task shares
lives next to it, one concern per file:

- `rows.py`: a split of Hub-layout data (in memory, `save_to_disk`, parquet, repo id) and its column check;
- `generation.py`: prompts through the chat template, batched left-padded greedy generation, the predictions file;
- `predictions.py`: reading a predictions file (ours or the original LLaVA answer file);
- `scoring.py`: parse + score, `results.json` / `results.md`;
- `run.py`: `evaluate()`, generation then scoring, or scoring alone;
- `model_index.py`: the metrics filed in a model card's `model-index`.


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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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
