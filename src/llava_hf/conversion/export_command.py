# llava-hf export --to transformers SRC DST
"""`llava-hf export` (convert_transformers_checkpoint.py): the arguments are parsed and the source checked before torch
loads. A source that is not a folder is bad input (exit 2); an export that fails exits 1."""

import json
import os
import sys

from ..utils.command_line import usage_error
from .arguments import ExportArguments, parse

EXPORT_DESCRIPTION = (
    "llava_hf <-> transformers' built-in `llava` layout (what llava-hf/* repos, vLLM, SGLang and TGI load)."
)


def main(argv: list[str] | None = None) -> int:
    prog = "llava-hf export"
    arguments, positional = parse(ExportArguments, argv, prog, EXPORT_DESCRIPTION, "llava_hf checkpoint folder")
    if arguments.to != "transformers":
        return usage_error(prog, f"unknown target {arguments.to!r}; supported: transformers.")
    if not os.path.isdir(positional.source):
        return usage_error(prog, f"source {positional.source!r} is not a folder (a llava_hf checkpoint).")
    from .common import ConversionError
    from .convert_transformers_checkpoint import export_to_transformers

    try:
        exported = export_to_transformers(positional.source, positional.destination)
    except ConversionError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    architecture = json.loads((exported / "config.json").read_text())["architectures"][0]
    print(f"exported {positional.source} -> {positional.destination} (transformers {architecture})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
