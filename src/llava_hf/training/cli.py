# llava-hf train --config examples/configs/tiny_stage2_finetune.yaml [--learning_rate 1e-4 ...]
# accelerate launch --config_file examples/configs/accelerate/ddp.yaml -m llava_hf.cli train --config recipe.yaml
"""`llava-hf train`: one stage from a YAML recipe plus command-line overrides. The YAML keys are the fields of
`LlavaRunArguments` and TRL's `SFTConfig` (TrlParser splits them); a command-line flag overrides the file."""

import sys


def main(argv: list[str] | None = None) -> int:
    from trl import SFTConfig, TrlParser

    from .train import LlavaRunArguments, train

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = TrlParser((LlavaRunArguments, SFTConfig))
    run, args = parser.parse_args_and_config(argv)
    trainer = train(run, args)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if losses:
        print(
            f"trained {trainer.state.global_step} steps; loss {losses[0]:.4f} -> {losses[-1]:.4f}; saved to {args.output_dir}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
