"""The command-line conventions every `llava-hf` command follows.

- Settings are dataclasses whose fields carry `help`, parsed by transformers' `HfArgumentParser`: each field is a flag
  (`--output_dir` and `--output-dir` both work), a `Literal[...]` type shows its choices in `--help` and rejects
  others, a boolean is `--flag` / `--flag false` (and `--no_flag` when it defaults to true).
- Bad input exits with status 2 and one line on stderr that names the fix (`llava-hf CMD: error: ...`), never a
  traceback or a usage dump: argparse errors, and ValueErrors raised by the dataclasses' `__post_init__` checks.
- Commands import their heavy modules (torch, models, TRL, FastAPI) inside `main`, after parsing, and declare their
  settings dataclasses in modules that import nothing heavy, so `--help` and bad flags answer at once (well under a
  second; `tests/utils/test_cli.py` checks that no command's `--help` imports torch).
- `HfArgumentParser` is loaded from `transformers/hf_argparser.py` without running `transformers/__init__.py`, which
  costs more than a second (the module itself needs only the standard library and PyYAML). TRL does the same for its
  `TrlParser` (https://github.com/huggingface/transformers/issues/44273).

    (arguments,) = parse_args(EvaluateArguments, argv, prog="llava-hf evaluate")
    ...
    fail("llava-hf evaluate", "pass exactly one of --model or --predictions")   # exits 2
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

HF_ARGPARSER = "transformers.hf_argparser"


def usage_error(prog: str, message: object) -> int:
    """Print `prog: error: message` (one line) to stderr and return 2, the status for bad input (for a `main` that
    returns its status)."""
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def fail(prog: str, message: object) -> NoReturn:
    """Print `prog: error: message` (one line) to stderr and exit with status 2, the status for bad input."""
    raise SystemExit(usage_error(prog, message))


def hf_argument_parser_class() -> type:
    """transformers' `HfArgumentParser`, importing `transformers.hf_argparser` alone when transformers is not loaded.

    The module is registered under its own name, so a later `import transformers` finds and reuses it: there is one
    `HfArgumentParser` class per process either way.
    """
    module = sys.modules.get(HF_ARGPARSER)
    if module is None and "transformers" in sys.modules:
        module = importlib.import_module(HF_ARGPARSER)
    if module is None:
        package = importlib.util.find_spec("transformers")  # finds the package folder without importing it
        path = Path(package.submodule_search_locations[0]) / "hf_argparser.py"
        spec = importlib.util.spec_from_file_location(HF_ARGPARSER, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[HF_ARGPARSER] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[HF_ARGPARSER]
            raise
    return module.HfArgumentParser


def build_parser(dataclass_types: type | Sequence[type], prog: str, description: str | None = None):
    """An `HfArgumentParser` for `dataclass_types` whose usage errors follow the convention above."""
    parser = hf_argument_parser_class()(dataclass_types, prog=prog, description=description)
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
