# python tests/training/tiny_run.py --output_dir OUT [--kill_at_step N | --kill_while_saving_step N] [--resume]
"""A tiny stage-2 run used by the resume tests: it can SIGKILL itself right after step N (between two checkpoints),
like a preempted job, or in the middle of writing checkpoint N (after the weights, before the optimizer and the
trainer state), and resume from the last complete checkpoint in OUT."""

import argparse
import os
import signal

import torch
from transformers import TrainerCallback
from trl import SFTConfig

from llava_hf.data.synthetic import make_shape_rows
from llava_hf.testing import make_tiny_model, make_tiny_processor
from llava_hf.training import LlavaRunArguments, build_trainer, save_outputs

MAX_STEPS, SAVE_STEPS = 8, 2  # 24 rows / batch 4 = 6 steps per epoch: the run crosses an epoch boundary
# One torch thread in the killed subprocess and in the test process alike: the weights are compared to 1e-6, and a
# different thread count changes the order of floating-point reductions (another test may have changed the test
# process's thread count before the reference run).
THREADS = 1


class KillAtStep(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def kill_while_saving(trainer, step: int) -> None:
    """SIGKILL once the weights of checkpoint-`step` are on disk, before the optimizer and trainer_state.json."""
    save_optimizer_and_scheduler = trainer._save_optimizer_and_scheduler

    def save_then_die(output_dir):
        if trainer.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        save_optimizer_and_scheduler(output_dir)

    trainer._save_optimizer_and_scheduler = save_then_die


def make_run(output_dir: str, resume_from_checkpoint: str | None = None):
    """Everything `llava_hf.training.train` takes: (run, args, model, processor, rows)."""
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=MAX_STEPS,
        save_steps=SAVE_STEPS,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        activation_checkpointing=False,
        disable_tqdm=True,
        seed=0,
        resume_from_checkpoint=resume_from_checkpoint,
    )
    run = LlavaRunArguments(stage="finetune")
    return run, args, make_tiny_model(), make_tiny_processor(), make_shape_rows(24, seed=4, image_size=32)


def make_trainer(output_dir: str, kill_at_step: int | None = None, kill_while_saving_step: int | None = None):
    run, args, model, processor, rows = make_run(output_dir)
    trainer = build_trainer(run, args, model, processor, rows)
    if kill_at_step is not None:
        trainer.add_callback(KillAtStep(kill_at_step))
    if kill_while_saving_step is not None:
        kill_while_saving(trainer, kill_while_saving_step)
    return trainer, run


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--kill_at_step", type=int)
    parser.add_argument("--kill_while_saving_step", type=int)
    parser.add_argument("--resume", action="store_true")
    options = parser.parse_args()
    torch.set_num_threads(THREADS)
    trainer, run = make_trainer(options.output_dir, options.kill_at_step, options.kill_while_saving_step)
    trainer.train(resume_from_checkpoint=True if options.resume else None)
    save_outputs(trainer, run)
