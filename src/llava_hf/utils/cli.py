"""The command-line conventions every `llava-hf` command follows.

- Settings are dataclasses whose fields carry `help`, parsed by transformers' `HfArgumentParser`: each field is a flag
  (`--output_dir` and `--output-dir` both work), a `Literal[...]` type shows its choices in `--help` and rejects
  others, a boolean is `--flag` / `--flag false` (and `--no_flag` when it defaults to true).
- Bad input exits with status 2 and one line on stderr that names the fix (`llava-hf CMD: error: ...`), never a
  traceback or a usage dump: argparse errors, and ValueErrors raised by the dataclasses' `__post_init__` checks.
- Commands import their heavy modules (torch, models) inside `main`, after parsing, so `--help` and bad flags answer
  at once.

    (arguments,) = parse_args(EvaluateArguments, argv, prog="llava-hf evaluate")
    ...
    fail("llava-hf evaluate", "pass exactly one of --model or --predictions")   # exits 2
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn


def fail(prog: str, message: str) -> NoReturn:
    """Print `prog: error: message` (one line) to stderr and exit with status 2, the status for bad input."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


def build_parser(dataclass_types: type | Sequence[type], prog: str, description: str | None = None):
    """An `HfArgumentParser` for `dataclass_types` whose usage errors follow the convention above."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types, prog=prog, description=description)
    parser.error = lambda message: fail(prog, f"{message} (see `{prog} --help`)")
    return parser


def parse_args(
    dataclass_types: type | Sequence[type], argv: list[str] | None, prog: str, description: str | None = None
) -> tuple:
    """Parse `argv` into instances of `dataclass_types` (in order); bad input exits 2 with one line."""
    parser = build_parser(dataclass_types, prog, description)
    try:
        return parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # a dataclass's own validation in __post_init__
        fail(prog, str(error))
