# llava-hf train --config examples/configs/tiny_stage2_finetune.yaml [--learning_rate 1e-4 ...]
# accelerate launch --config_file examples/configs/accelerate/ddp.yaml -m llava_hf.cli train --config recipe.yaml
"""`llava-hf train`: one stage from a YAML recipe plus command-line overrides. The YAML keys and flags are the fields
of `LlavaRunArguments` and of TRL's `SFTConfig` (which holds transformers' `TrainingArguments`).

This module sits outside `training/` (whose import loads torch and TRL, several seconds) so that `--help` and
mistakes in LLaVA's own flags answer at once: `--help` lists LLaVA's flags and points to `--help-all`, which loads
TRL and lists SFTConfig's flags too; LLaVA's flags are checked (choices, types) before the run starts; the rest is
parsed by TRL's `TrlParser` in `training/cli.py`.
"""

import os
import sys

from .training_arguments import LlavaRunArguments
from .utils.cli import build_parser, fail

PROG = "llava-hf train"
EPILOG = (
    "Training settings: every field of TRL's SFTConfig and transformers' TrainingArguments (--output_dir, "
    "--learning_rate, --num_train_epochs, --per_device_train_batch_size, --max_length, ...), as flags or as YAML keys "
    "in --config; a flag overrides the file. `llava-hf train --help-all` lists them (it loads TRL and torch, a few "
    "seconds)."
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--help-all" in argv:
        argv = ["--help"]  # TrlParser's own help: LLaVA's flags and SFTConfig's
    else:
        parser = build_parser(LlavaRunArguments, PROG, description=__doc__.split("\n\n")[0])
        parser.epilog = EPILOG
        parser.add_argument("--config", help="YAML recipe (examples/configs/); flags override its keys.")
        parser.add_argument("--help-all", action="store_true", help="Also list SFTConfig's flags (loads TRL).")
        known = parser.parse_known_args(argv)[0]  # --help, and LLaVA's flags checked before TRL loads (exit 2)
        if known.config is not None and not os.path.isfile(known.config):
            fail(PROG, f"--config {known.config}: no such file (the recipes are in examples/configs/)")
    from .training.cli import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
