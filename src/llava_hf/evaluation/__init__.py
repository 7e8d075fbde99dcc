"""Benchmarks with the LLaVA paper's protocols on one small task interface (see `task.py`, which lists
where each shared part lives).

Entry points from Python:
- `Task`, `Example`, `evaluate(task, model, processor, output_dir=...)` / `evaluate(task, predictions=...)`;
- `scienceqa.build_task(data, split)`, `pope.build_task(data)`, `llava_bench.build_task(data, JudgeArguments(...))`,
  or in-memory examples: `scienceqa.make_example(...)`, `llava_bench.make_example(...)` + `llava_bench.build_task(
  examples=..., judge_settings=...)`;
- `add_results_to_model_card(readme_path, results, model_name)`.

Files:
- `task.py`                        the task interface: Example, Outcome, Task (examples, parse, score)
- `rows.py`                        one split of Hub-layout data (in memory, save_to_disk, parquet, repo id); column check
- `generation.py`                  chat-template prompts, batched left-padded greedy generation, resumable predictions.jsonl
- `predictions.py`                 read a predictions file (ours or the original LLaVA answer file)
- `scoring.py`                     parse + score a task's answers; results.json and the results.md table
- `run.py`                         evaluate(): generate then score, or score a predictions file
- `model_index.py`                 metrics filed in a model card's model-index
- `scienceqa.py`                   ScienceQA (Hub + original layouts), the original prompts, answer parsing, -> LLaVA JSON
- `pope.py`                        POPE yes/no protocol; accuracy/precision/recall/F1/yes-ratio per split
- `llava_bench.py`                 LLaVA-Bench COCO/In-the-Wild; cached LLM judge; relative scores
- `evaluate_command.py`            `llava-hf evaluate`
- `scienceqa_to_llava_command.py`  `llava-hf scienceqa-to-llava`
- `lmms_eval_model.py`             lmms-eval plug-in `llava_hf_native` (the `lmms_eval.models` entry point in setup.cfg)
"""

from . import llava_bench, pope, scienceqa
from .generation import generate_predictions
from .model_index import add_results_to_model_card
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
