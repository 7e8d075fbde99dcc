"""Benchmarks with the LLaVA paper's protocols on one small task interface (see `task.py`, which lists
where each shared part lives).

Entry points from Python:
- `Task`, `Example`, `evaluate(task, model, processor, output_dir=...)` / `evaluate(task, predictions=...)`;
- `scienceqa.build_task(data, split)`, `pope.build_task(data)`, `llava_bench.build_task(data, JudgeSettings(...))`,
  or in-memory examples: `scienceqa.make_example(...)`, `llava_bench.make_example(...)` + `llava_bench.build_task(
  examples=..., judge_settings=...)`;
- `add_results_to_model_card(readme_path, results, model_name)`.
"""

from . import llava_bench, pope, scienceqa
from .generation import generate_predictions
from .model_card import add_results_to_model_card
from .predictions import read_predictions
from .run import evaluate
from .scoring import markdown_table, score_task, write_results
from .task import Example, Outcome, Task

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
