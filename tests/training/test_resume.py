"""Killing training (SIGKILL between two checkpoints, or while a checkpoint is being written) and resuming with
`resume_from_checkpoint="true"` (what `llava-hf train --resume_from_checkpoint true` passes) continues from the last
*complete* checkpoint with the same data order and reaches the same final weights as a run never interrupted."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import THREADS, make_run, make_trainer

from helpers.processes import run_to_exit
from llava_hf.cli import main as llava_hf
from llava_hf.training import train
from llava_hf.training.trainer import last_complete_checkpoint, resolve_resume_checkpoint

SCRIPT = Path(__file__).with_name("tiny_run.py")


@pytest.fixture(autouse=True)
def same_thread_count_as_the_subprocess():
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


def run_until_killed(output_dir: Path, *options: str) -> subprocess.CompletedProcess:
    return run_to_exit([sys.executable, str(SCRIPT), "--output_dir", str(output_dir), *options])


def assert_resumed_like_uninterrupted(reference, resumed, first_resumed_step: int):
    assert resumed.state.global_step == 8
    # The resumed run logged the remaining steps with the same losses as the uninterrupted run: same batches, order.
    losses = {entry["step"]: entry["loss"] for entry in reference.state.log_history if "loss" in entry}
    resumed_losses = {entry["step"]: entry["loss"] for entry in resumed.state.log_history if "loss" in entry}
    for step in range(first_resumed_step, 9):
        assert abs(resumed_losses[step] - losses[step]) < 1e-5, step
    expected = reference.model.state_dict()
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-6, msg=name)


@pytest.mark.slow  # ~30 s on 2 cores: a subprocess that imports torch, trains and is killed
def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    reference, _ = make_trainer(str(tmp_path / "uninterrupted"))
    reference.train()

    interrupted = tmp_path / "interrupted"
    killed = run_until_killed(interrupted, "--kill_at_step", "5")
    assert killed.returncode == -9, killed.stderr[-2000:]  # died by SIGKILL, after checkpoint-4 and before checkpoint-6
    assert sorted(path.name for path in interrupted.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (interrupted / "model.safetensors").exists()

    resumed, run = make_trainer(str(interrupted))
    resumed.train(resume_from_checkpoint=True)
    assert_resumed_like_uninterrupted(reference, resumed, first_resumed_step=5)
    assert load_file(str(interrupted / "checkpoint-8" / "model.safetensors"))  # and the final checkpoint is on disk


@pytest.mark.slow  # ~30 s on 2 cores, like the test above
def test_resume_true_skips_a_checkpoint_left_partial_by_a_kill_while_saving(tmp_path, caplog):
    reference, _ = make_trainer(str(tmp_path / "uninterrupted"))
    reference.train()

    interrupted = tmp_path / "interrupted"
    killed = run_until_killed(interrupted, "--kill_while_saving_step", "6")
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = interrupted / "checkpoint-6"
    # A real partial folder: the weights were written, the optimizer and trainer_state.json never were.
    assert (partial / "model.safetensors").is_file() and not (partial / "trainer_state.json").exists()
    assert not (partial / "optimizer.pt").exists()
    assert last_complete_checkpoint(interrupted) == interrupted / "checkpoint-4"

    run, args, model, processor, rows = make_run(str(interrupted), resume_from_checkpoint="true")
    with caplog.at_level(logging.INFO, logger="llava_hf.training.trainer"):
        resumed = train(run, args, model, processor, rows)
    assert (
        f"skipping {partial}: incomplete" in caplog.text
        and f"resuming from {interrupted / 'checkpoint-4'}" in caplog.text
    )
    assert_resumed_like_uninterrupted(reference, resumed, first_resumed_step=5)
    assert json.loads((interrupted / "checkpoint-6" / "trainer_state.json").read_text())["global_step"] == 6


def test_last_complete_checkpoint_skips_empty_and_truncated_folders(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (tmp_path / "checkpoint-10").mkdir()  # empty: killed right after the folder was made
    (tmp_path / "checkpoint-8").mkdir()
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_step": 8, "log_hi')  # killed mid-write
    (tmp_path / "checkpoint-notes").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert resolve_resume_checkpoint("true", tmp_path) == str(tmp_path / "checkpoint-2")
    assert resolve_resume_checkpoint(True, tmp_path) == str(tmp_path / "checkpoint-2")
    assert resolve_resume_checkpoint("True", tmp_path / "missing") is None  # nothing to resume: start at step 0
    assert resolve_resume_checkpoint("false", tmp_path) is None and resolve_resume_checkpoint(None, tmp_path) is None


def test_resume_from_an_incomplete_folder_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "checkpoint-3").mkdir()
    status = llava_hf(
        ["train", "--stage", "finetune", "--output_dir", str(tmp_path), "--resume_from_checkpoint",
         str(tmp_path / "checkpoint-3"), "--use_cpu", "true", "--bf16", "false", "--report_to", "none"]
    )  # fmt: skip
    error = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(error) == 1 and "not a complete checkpoint folder" in error[0], error
