"""Benchmarks with the LLaVA paper's protocols on one small task interface (see `task.py`).

Entry points from Python:
- `Task`, `Example`, `evaluate(task, model, processor, output_dir=...)` / `evaluate(task, predictions=...)`;
- `scienceqa.build_task(data, split)`, `pope.build_task(data)`, `llava_bench.build_task(data, JudgeSettings(...))`,
  or in-memory examples: `scienceqa.make_example(...)`, `llava_bench.make_example(...)` + `llava_bench.build_task(
  examples=..., judge_settings=...)`;
- `add_results_to_model_card(readme_path, results, model_name)`.
"""

from . import llava_bench, pope, scienceqa
from .task import (
    Example,
    Outcome,
    Task,
    add_results_to_model_card,
    evaluate,
    generate_predictions,
    markdown_table,
    read_predictions,
    score_task,
    write_results,
)

__all__ = [
    "Example",
    "Outcome",
    "Task",
    "add_results_to_model_card",
    "evaluate",
    "generate_predictions",
    "llava_bench",
    "markdown_table",
    "pope",
    "read_predictions",
    "score_task",
    "scienceqa",
    "write_results",
]
