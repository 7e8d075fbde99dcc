# llava-hf data check --source SOURCE [--image_folder DIR] [--processor PATH] [--chat_template NAME] [--max_length N]
#                     [--image_check header|decode|none]
# llava-hf data convert --json_path llava.json --image_folder images/ --output_dir my_dataset/
"""`llava-hf data`: `check` (preflight report; exit status 1 when any row has a problem) and `convert` (LLaVA JSON +
image folder -> Hub-ready parquet folder with embedded images)."""

import sys
from dataclasses import dataclass, field
from typing import Literal

from ..utils.command_line import fail, parse_args


@dataclass
class CheckArguments:
    source: str = field(
        metadata={"help": "LLaVA .json/.jsonl, a local dataset folder/parquet file, or a Hub dataset id."}
    )
    image_folder: str | None = field(
        default=None, metadata={"help": "Folder the LLaVA JSON image paths are relative to."}
    )
    split: str = field(default="train", metadata={"help": "Split to check (folders and Hub datasets)."})
    subset: str | None = field(default=None, metadata={"help": "Dataset configuration (e.g. a the_cauldron subset)."})
    processor: str | None = field(
        default=None,
        metadata={"help": "Processor or checkpoint folder / Hub id; enables the length and masking checks."},
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "Template training will use (name or Jinja file); default the processor's."}
    )
    max_length: int | None = field(
        default=None, metadata={"help": "Training max length, counted after image expansion."}
    )
    image_check: Literal["header", "decode", "none"] = field(
        default="header",
        metadata={
            "help": "header: open every image and read its header (exists, format, size, mode); decode: also decode "
            "every image (reads all pixel data); none: skip images."
        },
    )
    num_proc: int | None = field(
        default=None, metadata={"help": "Processes for the check (default: one per 10,000 rows, up to the CPUs)."}
    )
    show_ids: int = field(default=5, metadata={"help": "How many offending sample ids to print per problem."})


@dataclass
class DataConvertArguments:
    json_path: str = field(metadata={"help": "The original LLaVA JSON (list of {id, image, conversations})."})
    image_folder: str = field(metadata={"help": "Folder the image paths in the JSON are relative to."})
    output_dir: str = field(metadata={"help": "New folder for the parquet shards + dataset card (must not exist)."})
    max_shard_rows: int = field(default=5000, metadata={"help": "Rows per parquet shard."})


def run_check(argv: list[str]) -> int:
    (args,) = parse_args(CheckArguments, argv, "llava-hf data check")
    from ..processing import resolve_chat_template
    from .check import check_rows
    from .formats import load_rows

    try:
        dataset = load_rows(args.source, args.image_folder, args.split, args.subset)
    except ValueError as error:  # unreadable data (encoding, format, roles): one line naming the record, no traceback
        print(f"llava-hf data check: {error}", file=sys.stderr)
        return 2
    processor = None
    if args.processor:
        from ..utils.loading import checkpoint_classes

        # llava_hf's own processor class (LLaVA-1.5 or 1.6), whichever format the folder was saved in
        processor = checkpoint_classes(args.processor)[1].from_pretrained(args.processor)
    report = check_rows(
        dataset,
        processor,
        resolve_chat_template(args.chat_template),
        args.max_length,
        args.image_check,
        args.num_proc,
    )
    print(report.table(args.show_ids))
    return 0 if report.ok else 1


def run_convert(argv: list[str]) -> int:
    (args,) = parse_args(DataConvertArguments, argv, "llava-hf data convert")
    from .formats import convert_llava_json

    output = convert_llava_json(args.json_path, args.image_folder, args.output_dir, args.max_shard_rows)
    print(f"wrote {output}")
    return 0


SUBCOMMANDS = {
    "check": (run_check, "preflight report of training data; exit status 1 when any row has a problem"),
    "convert": (run_convert, "LLaVA JSON + image folder -> Hub-ready parquet folder with embedded images"),
}
USAGE = "usage: llava-hf data {" + ",".join(SUBCOMMANDS) + "} [options]  (add -h for the options)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(USAGE + "\n\nsubcommands:\n" + "\n".join(f"  {name:8} {text}" for name, (_, text) in SUBCOMMANDS.items()))
        return 0
    if not argv or argv[0] not in SUBCOMMANDS:
        fail("llava-hf data", f"choose a subcommand: {' or '.join(SUBCOMMANDS)} (see `llava-hf data --help`)")
    return SUBCOMMANDS[argv[0]][0](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
