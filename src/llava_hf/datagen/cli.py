"""`llava-hf generate-data`: make LLaVA instruction data from captions + boxes with a teacher LLM (or rules).

    # any OpenAI-compatible endpoint (OpenAI, vLLM, TGI, Ollama, llama.cpp); the key is read from $OPENAI_API_KEY
    llava-hf generate-data --input caps_boxes.jsonl --output-dir out/ --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-7B-Instruct --concurrency 16 --limit 1000 --max-total-tokens 5000000
    # offline, no LLM: templated Q&A from the annotations (labelled rule-based in every record)
    python -m llava_hf.datagen.cli --coco-captions captions_train2017.json \\
        --coco-instances instances_train2017.json --output-dir out/ --teacher rule-based

Interrupt it any way you like (Ctrl-C, kill -9, a crash) and run the same command again: it resumes from the
journal in --output-dir without re-sending finished requests. Exit status: 0 done, 1 some requests failed (re-run
to retry them), 2 bad arguments, 3 the budget was spent (raise it and re-run to continue).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing

from .pipeline import GenerationConfig, run_generation


def build_parser() -> argparse.ArgumentParser:
    """One flag per `GenerationConfig` field, with the field's help; booleans are `store_true` switches."""
    parser = argparse.ArgumentParser(
        prog="llava-hf generate-data",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    hints = typing.get_type_hints(GenerationConfig)
    for config_field in dataclasses.fields(GenerationConfig):
        flag = "--" + config_field.name.replace("_", "-")
        kwargs = {"dest": config_field.name, "help": config_field.metadata["help"]}
        if config_field.default is dataclasses.MISSING and config_field.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
        elif config_field.default_factory is not dataclasses.MISSING:
            kwargs["default"] = config_field.default_factory()
        else:
            kwargs["default"] = config_field.default
        hint = hints[config_field.name]
        if hint is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(hint) is list:
            kwargs.update(nargs="+", type=typing.get_args(hint)[0])
        else:
            # `int | None` -> int; the None default simply stays when the flag is absent.
            kwargs["type"] = next(arg for arg in typing.get_args(hint) or (hint,) if arg is not type(None))
        parser.add_argument(flag, **kwargs)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    arguments = parser.parse_args(argv)
    try:
        config = GenerationConfig(**vars(arguments))
    except ValueError as error:
        parser.error(str(error))  # exits with status 2
    summary = run_generation(config)
    print(format_summary(summary, config))
    if summary["stopped_by_budget"]:
        print("stopped: the token/cost budget is spent; raise it and re-run the same command to continue.")
        return 3
    if summary["pending"]:
        print(f"{summary['pending']} jobs unfinished after request failures; re-run the same command to retry them.")
        return 1
    return 0


def format_summary(summary: dict, config: GenerationConfig) -> str:
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
