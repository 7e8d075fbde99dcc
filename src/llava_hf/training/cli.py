# llava-hf train --config examples/configs/tiny_stage2_finetune.yaml [--learning_rate 1e-4 ...]
# accelerate launch --config_file examples/configs/accelerate/ddp.yaml -m llava_hf.cli train --config recipe.yaml
"""`llava-hf train`: one stage from a YAML recipe plus command-line overrides. The YAML keys are the fields of
`LlavaRunArguments` and TRL's `SFTConfig` (TrlParser splits them); a command-line flag overrides the file."""

import sys


def main(argv: list[str] | None = None) -> int:
    from trl import SFTConfig, TrlParser

    from .train import CheckpointNotFound, LlavaRunArguments, train

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = TrlParser((LlavaRunArguments, SFTConfig))
    run, args = parser.parse_args_and_config(argv)
    succeeded = False
    try:
        trainer = train(run, args)
        succeeded = True
    except CheckpointNotFound as error:
        print(f"llava-hf train: {error}", file=sys.stderr)
        return 2
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
