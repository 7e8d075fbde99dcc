"""`evaluate(task, ...)`: a task end to end. With a model, answers are generated into `predictions.jsonl` (resuming
it) and then scored; with a predictions file, that file is scored as it is."""

from __future__ import annotations

import os
from pathlib import Path

from .generation import generate_predictions
from .predictions import PREDICTIONS_FILE, read_predictions
from .scoring import score_task, write_results
from .task import Task


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
