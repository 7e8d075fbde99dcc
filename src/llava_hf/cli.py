"""`llava-hf <command> ...`: one table from command name to the `main(argv)` of the module that implements it.

Each command module is imported only when its command runs, so `llava-hf --help` stays fast and optional
dependencies stay optional.
"""

import importlib
import logging
import sys

# bitsandbytes (>= 0.50) on a CPU with AVX512-BF16 asks the Hub for an optional 4-bit kernel when it is imported (TRL,
# PEFT and the quantized loaders import it); offline or unverified, it keeps its built-in kernel and logs two warnings,
# which would turn every one-line error of `llava-hf train` into three lines. The commands mute those two loggers only.
OPTIONAL_KERNEL_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels._internals.hf_hub")

# command -> (module, one-line help). Each module is named after its command (`<command>_command.py`); its `main` takes
# the arguments after the command and returns the exit status; it imports nothing heavy, so --help and bad flags
# answer at once.
COMMANDS = {
    "generate": ("llava_hf.serving.generate_command", "answer one prompt about one image with a checkpoint"),
    "demo": (
        "llava_hf.demo.demo_command",
        "the whole LLaVA recipe end to end on a synthetic world (~10 min on a laptop CPU)",
    ),
    "convert": (
        "llava_hf.conversion.convert_command",
        "original LLaVA / stage-1 / LoRA / transformers llava checkpoint -> llava_hf (--verify to check logits)",
    ),
    "export": (
        "llava_hf.conversion.export_command",
        "llava_hf -> transformers' built-in llava layout",
    ),
    "quantize": (
        "llava_hf.conversion.quantize_command",
        "checkpoint -> 4-bit or 8-bit (bitsandbytes) checkpoint, one file at a time; stock transformers loads it",
    ),
    "generate-data": (
        "llava_hf.datagen.generate_data_command",
        "instruction data from captions + boxes via a teacher LLM or rules",
    ),
    "data": (
        "llava_hf.data.data_command",
        "check training data (preflight report) or convert LLaVA JSON to a Hub-ready dataset",
    ),
    "train": ("llava_hf.training.train_command", "train a stage recipe (YAML + overrides) through TRL's SFTTrainer"),
    "evaluate": (
        "llava_hf.evaluation.evaluate_command",
        "run ScienceQA / POPE / LLaVA-Bench on a checkpoint or score answers",
    ),
    "scienceqa-to-llava": (
        "llava_hf.evaluation.scienceqa_to_llava_command",
        "convert ScienceQA to LLaVA fine-tuning JSON",
    ),
    "chat": ("llava_hf.serving.chat_command", "multi-turn chat about an image in the terminal, answers streamed"),
    "serve": (
        "llava_hf.serving.serve_command",
        "OpenAI-compatible HTTP server with dynamic batching and a web chat page",
    ),
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
    for name in OPTIONAL_KERNEL_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        function = command_function(command)
    except ImportError as error:  # an optional extra is missing: its message names the `pip install` that fixes it
        print(f"llava-hf {command}: {error}", file=sys.stderr)
        return 2
    return function(rest) or 0


def command_function(command: str):
    """The function behind `llava-hf COMMAND` (see COMMANDS)."""
    return importlib.import_module(COMMANDS[command][0]).main


if __name__ == "__main__":
    sys.exit(main())
