# llava-hf scienceqa-to-llava --data path/to/ScienceQA/data/scienceqa --image-folder path/to/ScienceQA/train --split train --output-dir sqa_llava
"""`llava-hf scienceqa-to-llava`: ScienceQA (original release, parquet or Hub id) as LLaVA fine-tuning JSON, in the
original converter's format (`scienceqa.convert_to_llava`)."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from ..utils.command_line import parse_args
from .scienceqa import PROMPT_FORMATS, convert_to_llava, load_examples


@dataclass
class ScienceQAToLlavaArguments:
    """`llava-hf scienceqa-to-llava`: the ScienceQA train split as LLaVA fine-tuning data."""

    data: str = field(metadata={"help": "ScienceQA: folder with problems.json + pid_splits.json, parquet, or Hub id"})
    output_dir: str = field(
        metadata={"help": "where llava_<split>_<format>.json (and images/ for Hub data) are written"}
    )
    split: str = field(default="train", metadata={"help": "split to convert"})
    image_folder: str | None = field(
        default=None,
        metadata={
            "help": "original layout: folder with <pid>/image.png (default <data>/images/<split> or <data>/<split>)"
        },
    )
    prompt_format: str = field(default="QCM-LEA", metadata={"help": f"one of {', '.join(PROMPT_FORMATS[1:])}"})


def main(argv: list[str] | None = None) -> int:
    (arguments,) = parse_args(ScienceQAToLlavaArguments, argv, "llava-hf scienceqa-to-llava")
    try:
        if arguments.prompt_format == "zero_shot" or arguments.prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"--prompt-format must be one of {', '.join(PROMPT_FORMATS[1:])}.")
        examples = load_examples(arguments.data, arguments.split, arguments.image_folder, arguments.prompt_format)
        path = convert_to_llava(examples, arguments.output_dir, arguments.prompt_format, arguments.split)
    except (ValueError, FileNotFoundError) as error:  # bad data, split or format: one line, no traceback
        print(f"llava-hf scienceqa-to-llava: {error}", file=sys.stderr)
        return 2
    print(f"wrote {len(examples)} records to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
