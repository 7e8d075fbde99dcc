"""Scoring: each example's answer parsed and the task's `score` run over all outcomes, with what every task reports
(counts, missing ids, model ids); the results written as `results.json` and a markdown table in `results.md`."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..utils.io import atomic_write
from .task import Outcome, Task

RESULTS_FILE = "results.json"
TABLE_FILE = "results.md"


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
