"""The command-line conventions every `llava-hf` command follows.

- Settings are dataclasses whose fields carry `help`, parsed by transformers' `HfArgumentParser`: each field is a flag
  (`--output_dir` and `--output-dir` both work), a `Literal[...]` type shows its choices in `--help` and rejects
  others, a boolean is `--flag` / `--flag false` (and `--no_flag` when it defaults to true).
- Bad input exits with status 2 and one line on stderr that names the fix (`llava-hf CMD: error: ...`), never a
  traceback or a usage dump: argparse errors, and ValueErrors raised by the dataclasses' `__post_init__` checks.
- Commands import their heavy modules (torch, models, TRL, FastAPI) inside `main`, after parsing, and declare their
  settings dataclasses in modules that import nothing heavy, so `--help` and bad flags answer without loading torch
  (`tests/utils/test_command_line.py` checks it for every command).

    (arguments,) = parse_args(EvaluateArguments, argv, prog="llava-hf evaluate")
    ...
    fail("llava-hf evaluate", "pass exactly one of --model or --predictions")   # exits 2
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn


def usage_error(prog: str, message: object) -> int:
    """Print `prog: error: message` (one line) to stderr and return 2, the status for bad input (for a `main` that
    returns its status)."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def fail(prog: str, message: object) -> NoReturn:
    """Print `prog: error: message` (one line) to stderr and exit with status 2, the status for bad input."""
    raise SystemExit(usage_error(prog, message))


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`HfArgumentParser`'s formatter, except that a help text which states its own default ("(default: the one they
    name)") does not get argparse's "(default: None)" appended as well."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser(dataclass_types: type | Sequence[type], prog: str, description: str | None = None):
    """An `HfArgumentParser` for `dataclass_types` whose usage errors follow the convention above."""
    from transformers import HfArgumentParser  # transformers' lazy __init__: no torch for the parser

    parser = HfArgumentParser(dataclass_types, prog=prog, description=description, formatter_class=HelpFormatter)
    parser.error = lambda message: fail(prog, f"{message} (see `{prog} --help`)")
    return parser


def parse_args(
    dataclass_types: type | Sequence[type], argv: list[str] | None, prog: str, description: str | None = None
) -> tuple:
    """Parse `argv` into instances of `dataclass_types` (in order); bad input exits 2 with one line."""
    parser = build_parser(dataclass_types, prog, description)
    try:
        return parse_into_dataclasses(parser, argv)
    except ValueError as error:  # a dataclass's own validation in __post_init__
        fail(prog, str(error))


def parse_into_dataclasses(parser, argv: list[str] | None) -> tuple:
    """`parser.parse_args_into_dataclasses(argv)`, with unknown flags reported first, in argparse's words (one line,
    exit 2), instead of after the dataclasses' own checks as a ValueError (which could hide a mistyped flag)."""
    unknown = parser.parse_known_args(argv)[1]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return parser.parse_args_into_dataclasses(args=argv)
