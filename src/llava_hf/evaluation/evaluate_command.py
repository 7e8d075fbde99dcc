# llava-hf evaluate --task scienceqa --model path/to/checkpoint --data derek-thomas/ScienceQA --output-dir runs/sqa
"""`llava-hf evaluate`: run one benchmark on a checkpoint, or re-score a predictions file, and write the results.

    llava-hf evaluate --task scienceqa --model ckpt --data path/to/ScienceQA/data/scienceqa --image-folder .../test \\
        --output-dir runs/sqa                                       # generate (resumable), score, write results
    llava-hf evaluate --task scienceqa --predictions answers.jsonl --data ... --output-dir runs/sqa_rescored
    llava-hf evaluate --task pope --model ckpt --data lmms-lab/POPE --output-dir runs/pope
    llava-hf evaluate --task llava_bench --model ckpt --data llava-bench-in-the-wild/ --output-dir runs/wild \\
        --judge-base-url http://127.0.0.1:8000/v1 --judge-model Qwen/Qwen2.5-72B-Instruct [--judge-swapped]

Writes to `--output-dir`: predictions.jsonl (one answer per line, resumable), results.json, results.md, and for
LLaVA-Bench judgments.jsonl (the judge cache). `--model-card README.md` also files the metrics in that card's
`model-index` metadata. Checkpoints load into llava_hf's classes (`load_checkpoint`): ours, transformers' built-in llava too.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..utils.command_line import parse_args
from ..utils.endpoints import JudgeEndpointArguments
from ..utils.loading import QUANTIZE_4BIT_HELP, QUANTIZE_8BIT_HELP
from . import llava_bench, pope, scienceqa
from .model_index import add_results_to_model_card
from .predictions import PREDICTIONS_FILE
from .run import evaluate
from .scoring import markdown_table
from .task import Task

DEFAULT_SPLITS = {"scienceqa": "test", "pope": "test", "llava_bench": "train"}


@dataclass
class EvaluateArguments(JudgeEndpointArguments):
    """Settings of one `llava-hf evaluate` run (flags are the field names, `--output-dir` or `--output_dir`)."""

    task: Literal["scienceqa", "pope", "llava_bench"] = field(metadata={"help": "the benchmark"})
    data: str = field(
        metadata={"help": "benchmark data: original folder, Hub-layout parquet/save_to_disk folder, or Hub id"}
    )
    output_dir: str = field(
        metadata={"help": "folder for predictions.jsonl, results.json, results.md (rerun to resume)"}
    )
    model: str | None = field(default=None, metadata={"help": "checkpoint folder or Hub id to generate answers with"})
    predictions: str | None = field(
        default=None,
        metadata={"help": "score this predictions JSONL instead of generating ({question_id, text} lines)"},
    )
    split: str | None = field(default=None, metadata={"help": "dataset split (default: test; LLaVA-Bench Hub: train)"})
    image_folder: str | None = field(default=None, metadata={"help": "images of the original layouts"})
    limit: int | None = field(default=None, metadata={"help": "evaluate only the first N examples (smoke runs)"})
    batch_size: int | None = field(
        default=None,
        metadata={
            "help": "prompts generated together, left-padded (default: 8 on a GPU, 1 on CPU, where each prompt's KV "
            "cache (0.3 GiB for a 7B) counts against the memory the weights leave)"
        },
    )
    max_new_tokens: int | None = field(default=None, metadata={"help": "answer length limit (default: per task)"})
    dtype: str = field(
        default="auto",
        metadata={"help": "model dtype: auto (as saved on a GPU; on CPU float32 for small models, else bfloat16 where the CPU has it natively, else as saved), bfloat16, float16, float32"},
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps"})
    load_in_4bit: bool = field(default=False, metadata={"help": QUANTIZE_4BIT_HELP})
    load_in_8bit: bool = field(default=False, metadata={"help": QUANTIZE_8BIT_HELP})
    chat_template: str | None = field(
        default=None,
        metadata={"help": "override the processor's chat template: a name such as vicuna_v1, a .jinja file, or Jinja"},
    )
    prompt_format: str = field(
        default="zero_shot", metadata={"help": "ScienceQA prompt: zero_shot, or a fine-tuning format such as QCM-LEA"}
    )
    pope_splits: list[str] = field(
        default_factory=lambda: list(pope.SPLITS), metadata={"help": "POPE splits to evaluate"}
    )
    judge_temperature: float = field(default=0.0, metadata={"help": "judge sampling temperature"})
    judge_max_tokens: int = field(default=256, metadata={"help": "judge reply length limit"})
    judge_retries: int = field(default=2, metadata={"help": "re-asks of an unparseable judgment before reporting it"})
    judge_concurrency: int = field(default=8, metadata={"help": "judge requests in flight"})
    judge_swapped: bool = field(default=False, metadata={"help": "also judge with the candidate first (position bias)"})
    model_card: str | None = field(
        default=None, metadata={"help": "README.md whose model-index metadata gets the metrics (created if missing)"}
    )
    model_name: str | None = field(default=None, metadata={"help": "model name for the model card (default: --model)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (--no-progress to hide it)"})
    ignore_extra_ids: bool = field(
        default=False,
        metadata={"help": "score --predictions that also answer ids outside the split (listed, left out)"},
    )


def build_task(arguments: EvaluateArguments) -> Task:
    """The task the arguments name, loaded from `--data`."""
    split = arguments.split or DEFAULT_SPLITS[arguments.task]
    common = {"limit": arguments.limit, "max_new_tokens": arguments.max_new_tokens}
    if arguments.task == "scienceqa":
        return scienceqa.build_task(arguments.data, split, arguments.image_folder, arguments.prompt_format, **common)
    if arguments.task == "pope":
        return pope.build_task(arguments.data, split, arguments.image_folder, arguments.pope_splits, **common)
    if not (arguments.judge_base_url and arguments.judge_model):
        raise ValueError("--task llava_bench needs a judge: pass --judge-base-url and --judge-model.")
    settings = llava_bench.JudgeArguments(
        **vars(arguments.judge_endpoint(concurrency=arguments.judge_concurrency)),
        temperature=arguments.judge_temperature,
        max_tokens=arguments.judge_max_tokens,
        retries=arguments.judge_retries,
        swapped=arguments.judge_swapped,
    )
    return llava_bench.build_task(
        arguments.data,
        settings,
        Path(arguments.output_dir) / "judgments.jsonl",
        split=split,
        image_folder=arguments.image_folder,
        **common,
    )


def main(argv: list[str] | None = None) -> int:
    (arguments,) = parse_args(EvaluateArguments, argv, "llava-hf evaluate")
    try:
        return run(arguments)
    except (ValueError, FileNotFoundError) as error:  # bad data, split, predictions or flags: one line, no traceback
        print(f"llava-hf evaluate: {error}", file=sys.stderr)
        return 2


def run(arguments: EvaluateArguments) -> int:
    """`llava-hf evaluate` after parsing; raises ValueError/FileNotFoundError naming the fix for bad input."""
    if arguments.task not in DEFAULT_SPLITS:
        raise ValueError(f"unknown task {arguments.task!r}; choose one of {', '.join(DEFAULT_SPLITS)}.")
    if (arguments.model is None) == (arguments.predictions is None):
        raise ValueError("pass exactly one of --model (generate answers) or --predictions (score a file).")
    if arguments.ignore_extra_ids and arguments.predictions is None:
        raise ValueError("--ignore-extra-ids applies to --predictions (a file to score), not to --model runs.")
    task = build_task(arguments)
    model = processor = None
    if arguments.model is not None:
        from ..utils.loading import load_checkpoint, quantization_from_flags

        model, processor = load_checkpoint(
            arguments.model,
            dtype=arguments.dtype,
            device=arguments.device,
            quantization=quantization_from_flags(arguments.load_in_4bit, arguments.load_in_8bit),
            chat_template=arguments.chat_template,
        )
    results = evaluate(
        task,
        model,
        processor,
        output_dir=arguments.output_dir,
        predictions=arguments.predictions,
        batch_size=arguments.batch_size or (1 if model is not None and model.device.type == "cpu" else 8),
        max_new_tokens=arguments.max_new_tokens,
        model_id=arguments.model,
        progress=arguments.progress,
        ignore_extra_ids=arguments.ignore_extra_ids,
    )
    print(markdown_table(results))
    for line in problem_counts(results):
        print(line)
    if arguments.model_card:
        add_results_to_model_card(arguments.model_card, results, arguments.model_name or arguments.model or task.name)
        print(f"added {len(results['metrics'])} metric(s) to {arguments.model_card}")
    if arguments.model is not None:
        print(f"answers: {Path(arguments.output_dir) / PREDICTIONS_FILE}")
    return 0


def problem_counts(results: dict) -> list[str]:
    """One line per kind of answer or judgment that did not count normally (each task's key; see results.json)."""

    def count(value) -> int:  # a list, or LLaVA-Bench's {judging order: list}
        return sum(len(items) for items in value.values()) if isinstance(value, dict) else len(value)

    kinds = {
        "unparseable": "unparseable answer(s), counted as wrong",
        "unclear": "unclear answer(s), counted as the POPE protocol says",
        "unparsed": "unparsed judge reply(ies), left out of every mean",
        "judge_errors": "judge request(s) that failed, left out of every mean",
        "missing": "example(s) without an answer, counted as wrong",
        "ignored_ids": "answer(s) for ids outside the split, ignored (--ignore-extra-ids)",
    }
    lines = []
    for key, what in kinds.items():
        number = count(results.get(key) or [])
        if number:
            lines.append(f"{number} {what}; see results.json")
    return lines


if __name__ == "__main__":
    sys.exit(main())
