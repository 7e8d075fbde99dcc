"""Killing training (SIGKILL between two checkpoints) and resuming from the last checkpoint continues with the same
data order and reaches the same final weights as a run that was never interrupted."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_run import make_trainer

SCRIPT = Path(__file__).with_name("tiny_run.py")


@pytest.mark.slow  # ~30 s on 2 cores: a subprocess that imports torch, trains and is killed
def test_resume_after_kill_reaches_the_same_weights(tmp_path):
    reference, _ = make_trainer(str(tmp_path / "uninterrupted"))
    reference.train()
    expected = {name: tensor.detach().clone() for name, tensor in reference.model.state_dict().items()}

    interrupted = tmp_path / "interrupted"
    killed = subprocess.run(
        [sys.executable, str(SCRIPT), "--output_dir", str(interrupted), "--kill_at_step", "5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # died by SIGKILL, after checkpoint-4 and before checkpoint-6
    assert sorted(path.name for path in interrupted.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]
    assert not (interrupted / "model.safetensors").exists()

    resumed, run = make_trainer(str(interrupted))
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    # The resumed run logged steps 5..8 with the same losses as the uninterrupted run: same batches, same order.
    losses = {entry["step"]: entry["loss"] for entry in reference.state.log_history if "loss" in entry}
    resumed_losses = {entry["step"]: entry["loss"] for entry in resumed.state.log_history if "loss" in entry}
    for step in range(5, 9):
        assert abs(resumed_losses[step] - losses[step]) < 1e-5, step
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-6, msg=name)
    # and the checkpoint on disk holds those weights too
    saved = load_file(str(interrupted / "checkpoint-8" / "model.safetensors"))
    assert saved
