# llava-hf train --config examples/configs/tiny_stage2_finetune.yaml [--learning_rate 1e-4 ...]
# accelerate launch --config_file examples/configs/accelerate/ddp.yaml -m llava_hf.cli train --config recipe.yaml
"""`llava-hf train`: one stage from a YAML recipe plus command-line overrides. The YAML keys and flags are the fields
of `LlavaRunArguments` and of TRL's `SFTConfig` (which holds transformers' `TrainingArguments`).

`--help` and mistakes in LLaVA's own flags answer before torch and TRL load (several seconds): `--help` lists LLaVA's
flags and points to `--help-all`, which loads TRL and lists SFTConfig's flags too; LLaVA's flags are checked
(choices, types) first; then `run` parses everything with TRL's `TrlParser` (a flag overrides the file) and one stage
trains.
"""

import os
import sys

from ..utils.command_line import HelpFormatter, build_parser, fail, usage_error
from .arguments import LlavaRunArguments

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
    return run(argv)


def run(argv: list[str]) -> int:
    from trl import SFTConfig, TrlParser

    from ..data.check import DataCheckError
    from .trainer import CheckpointNotFound, train

    parser = TrlParser((LlavaRunArguments, SFTConfig), prog=PROG, formatter_class=HelpFormatter)
    parser.error = lambda message: sys.exit(usage_error(PROG, f"{message} (see `{PROG} --help-all`)"))
    flags = list(argv)
    if "--config" in flags:  # TrlParser reads `--config PATH` itself; the rest are flags
        del flags[flags.index("--config") : flags.index("--config") + 2]
    unknown = parser.parse_known_args(flags)[1]  # before the dataclasses' own checks, which would hide a typo
    if unknown:
        return usage_error(PROG, f"unrecognized arguments: {' '.join(unknown)} (see `{PROG} --help-all`)")
    try:
        run, args = parser.parse_args_and_config(argv)
    except (ValueError, OSError) as error:  # unknown YAML keys, a missing --config file, a field's own check
        return usage_error(PROG, error)
    succeeded = False
    try:
        trainer = train(run, args)
        succeeded = True
    except CheckpointNotFound as error:
        print(f"llava-hf train: {error}", file=sys.stderr)
        return 2
    except DataCheckError as error:  # refused data is bad input: the report on stdout, one line on stderr
        report = error.report
        print(report.table() if report is not None else error)
        counts = ", ".join(f"{name} {len(rows)}" for name, rows in report.problems.items() if rows) if report else ""
        return usage_error(
            PROG,
            f"the training data has problems ({counts}; report above); fix them or pass --skip_bad_rows true "
            "to train without those rows (`llava-hf data check` shows the offending ids)",
        )
    finally:
        close_process_group(succeeded, args.ddp_timeout)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if losses:
        print(
            f"trained {trainer.state.global_step} steps; loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved to {args.output_dir}"
        )
    return 0


def close_process_group(succeeded: bool = True, timeout_seconds: int = 1800) -> None:
    """Under `accelerate launch`, close the process group so the rank can exit; a no-op in a single process.

    A rank that exits with the group open dies in gloo's thread teardown ("terminate called without an active
    exception", SIGABRT) and the launcher reports the whole run as failed. After success every rank waits for the
    others (rank 0 may still be saving) in a barrier bounded by `ddp_timeout`, which names a missing rank instead of
    waiting forever (gloo's monitored barrier). After a failure there is no barrier: the other ranks may be inside a
    collective that would never match it; closing the group drops the connections, so they fail instead of hanging.
    """
    import datetime

    import torch.distributed as distributed

    if not (distributed.is_available() and distributed.is_initialized()):
        return
    try:
        if succeeded:
            timeout = datetime.timedelta(seconds=timeout_seconds)
            if distributed.get_backend() == "gloo":
                distributed.monitored_barrier(timeout=timeout, wait_all_ranks=True)
            else:
                distributed.barrier()
    finally:
        distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
