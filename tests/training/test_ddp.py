"""The same `llava-hf train` command runs under `accelerate launch` with 2 CPU processes (DDP over gloo)."""

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "examples"))
from train_tiny import make_tiny_data, make_tiny_parts  # noqa: E402


def free_port() -> int:
    # A fixed rendezvous port (accelerate's default 29500) collides with any other run on the machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None, reason="accelerate CLI")
def test_ddp_two_cpu_processes(tmp_path):
    vision_dir, language_dir = make_tiny_parts(tmp_path / "parts")
    json_path, image_folder = make_tiny_data(tmp_path / "data", num_rows=16)
    output = tmp_path / "ddp"
    command = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"),
        "launch",
        "--config_file",
        str(REPO / "examples/configs/accelerate/ddp_cpu_2proc.yaml"),
        "--main_process_port", str(free_port()),
        "-m",
        "llava_hf.cli",
        "train",
        "--config",
        str(REPO / "examples/configs/tiny_stage2_finetune.yaml"),
        "--vision_tower", str(vision_dir),
        "--language_model", str(language_dir),
        "--data_path", str(json_path),
        "--image_folder", str(image_folder),
        "--output_dir", str(output),
        "--projector_path", "",  # no stage-1 projector here: start from the fresh one
        "--max_steps", "2",
        "--logging_steps", "1",
        "--disable_tqdm", "true",
    ]  # fmt: skip
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment, cwd=tmp_path)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # 16 rows, 8 per process: with 2 processes one step is a whole epoch (a single process would need 2 steps).
    epochs = [float(value) for value in re.findall(r"'epoch': '([0-9.]+)'", log)]
    assert epochs[:2] == [1.0, 2.0], log[-3000:]
    assert log.count("trained 2 steps") == 2  # both ranks ran the command
    weights = load_file(str(output / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
