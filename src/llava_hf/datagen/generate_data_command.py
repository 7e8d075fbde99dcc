"""`llava-hf generate-data`: make LLaVA instruction data from captions + boxes with a teacher LLM (or rules).

    # any OpenAI-compatible endpoint (OpenAI, vLLM, TGI, Ollama, llama.cpp); the key is read from $OPENAI_API_KEY
    # (--teacher-api-key-env names another variable)
    llava-hf generate-data --input caps_boxes.jsonl --output-dir out/ \\
        --teacher-base-url http://127.0.0.1:8000/v1 --teacher-model Qwen/Qwen2.5-7B-Instruct --concurrency 16 --limit 1000 --max-total-tokens 5000000
    # offline, no LLM: templated Q&A from the annotations (labelled rule-based in every record)
    python -m llava_hf.datagen.generate_data_command --coco-captions captions_train2017.json \\
        --coco-instances instances_train2017.json --output-dir out/ --teacher rule-based

Interrupt it any way you like (Ctrl-C, kill -9, a crash) and run the same command again: it resumes from the
journal in --output-dir without re-sending finished requests. Exit status: 0 done, 1 some requests failed (re-run
to retry them), 2 bad arguments, 3 the budget was spent (raise it and re-run to continue).
"""

from __future__ import annotations

import json
import sys

from ..utils.command_line import parse_args
from .pipeline import GenerateDataArguments, run_generation


def main(argv: list[str] | None = None) -> int:
    (config,) = parse_args(GenerateDataArguments, argv, "llava-hf generate-data", description=__doc__.split("\n\n")[0])
    summary = run_generation(config)
    print(format_summary(summary, config))
    if summary["stopped_by_budget"]:
        print("stopped: the token/cost budget is spent; raise it and re-run the same command to continue.")
        return 3
    if summary["pending"]:
        print(f"{summary['pending']} jobs unfinished after request failures; re-run the same command to retry them.")
        return 1
    return 0


def format_summary(summary: dict, config: GenerateDataArguments) -> str:
    lines = [
        f"teacher: {summary['teacher']['kind']} ({summary['teacher']['model']}), {summary['images']} images",
        f"records: {json.dumps(summary['records'])}, stage-1 captions: {summary['caption_records']}",
        f"rejects: {json.dumps(summary['rejects'])}, gave up: {summary['gave_up']}, pending: {summary['pending']}",
        f"requests this run: {summary['requests_this_run']}, failed: {summary['failed_requests_this_run']}",
        f"tokens (all runs): prompt {summary['tokens']['prompt']}, completion {summary['tokens']['completion']}, "
        f"cost ${summary['cost_usd']:.4f}",
        f"wrote {config.output_dir}/llava_instruct.json, llava_caption.json, rejects.jsonl, summary.json",
    ]
    lines += [f"failed: {failure}" for failure in summary["failures"][:5]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
