"""`llava-hf <command> ...`: one table from command name to the `main(argv)` of the module that implements it.

Each command module is imported only when its command runs, so `llava-hf --help` stays fast and optional
dependencies stay optional.
"""

import importlib
import sys

# command -> (module, one-line help). Each module defines `main(argv: list[str] | None = None) -> int`.
COMMANDS = {
    "generate": ("llava_hf.serving.generate", "answer one prompt about one image with a checkpoint"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        width = max(len(name) for name in COMMANDS)
        lines = [f"  {name.ljust(width)}  {help_text}" for name, (_, help_text) in sorted(COMMANDS.items())]
        print("usage: llava-hf <command> [options]\n\ncommands:\n" + "\n".join(lines))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"llava-hf: unknown command {command!r}; run `llava-hf --help` for the list.", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return module.main(rest) or 0


if __name__ == "__main__":
    sys.exit(main())
