# llava-hf demo [--device cuda] [--skip-stage1] [--vision-feature-layer -1] [--output-dir llava_demo] [--seed 0]
#               [--ablation-seeds 3]
"""`llava-hf demo`: the whole LLaVA recipe on a synthetic world, end to end, on a CPU, nothing downloaded.

Flags are the fields of `DemoArguments` (llava_hf/demo/end_to_end.py), written with dashes or underscores.
"""

from __future__ import annotations

import sys

from ..utils.command_line import build_parser, parse_into_dataclasses, usage_error
from .end_to_end import DemoArguments

PROG = "llava-hf demo"


def parse_args(argv: list[str]) -> DemoArguments:
    # HfArgumentParser accepts both --skip-stage1 and --skip_stage1; booleans take `--flag` or `--flag false`.
    parser = build_parser(DemoArguments, PROG, description=__doc__.splitlines()[0])
    (config,) = parse_into_dataclasses(parser, argv)
    return config


def format_summary(summary: dict) -> str:
    """The closing summary: accuracy per question type vs chance, the relative score, where everything is."""
    lines = ["", "=" * 72, f"llava_hf demo finished in {summary['total_seconds']:.0f} s on {summary['device']}", ""]
    lines.append("Multiple choice on held-out images (ScienceQA format):")
    for name, row in summary["multiple_choice"].items():
        lines.append(
            f"  {name:<10} {row['accuracy']:5.1f}%  ({row['correct']}/{row['total']}, chance {row['chance']:.0f}%)"
        )
    bench = dict(summary["llava_bench"])
    lines.append(f"LLaVA-Bench-style relative score ({bench.pop('judge')}):")
    lines += [f"  {name:<10} {value:5.1f}" for name, value in bench.items()]
    lines += check_lines(summary["answer_checks"])
    chat = summary["chat"]
    lines.append(f"Chat about held-out image {chat[0]['image_id']}:")
    for turn in chat[1:]:
        lines += [f"  USER: {turn['question']}", f"  ASSISTANT: {turn['answer']}"]
    output_dir = summary["config"]["output_dir"]
    lines += [
        "",
        f"model (Hub-ready, loads with pipeline('image-text-to-text')): {summary['model_dir']}",
        f"report: {output_dir}/report/report.md    summary: {output_dir}/summary.json",
        "=" * 72,
    ]
    return "\n".join(lines)


def check_lines(checks: dict) -> list[str]:
    """The object checker's figures on the detailed descriptions and the share of answers repeating a phrase."""
    objects, reference = checks["detail_objects"], checks["detail_objects_reference"]
    repetition = checks["repetition"]["overall"]
    return [
        f"Detailed descriptions, objects named with colour, shape and position ({objects['objects']} objects): "
        f"recall {objects['recall']:.1f}%, precision {objects['precision']:.1f}% "
        f"(reference answers: {reference['recall']:.1f}%, {reference['precision']:.1f}%)",
        f"Answers repeating a 3-word phrase the reference does not repeat: {repetition['repeating']} of "
        f"{repetition['answers']} ({repetition['percent']:.1f}%)",
    ]


def main(argv: list[str] | None = None) -> int:
    try:
        config = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as error:  # DemoArguments's checks: one line naming the fix, exit code 2 like argparse
        return usage_error(PROG, error)
    if config.ablation_seeds:
        from .ablation import format_ablation, run_ablation

        print(format_ablation(run_ablation(config, config.ablation_seeds)))
        return 0
    from .end_to_end import run_demo  # torch, transformers, TRL

    summary = run_demo(config)
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
