"""The same `llava-hf train` command runs under `accelerate launch` with 2 CPU processes (DDP over gloo), the second
rank reusing the first one's parsed rows and data check, and a rank that fails ends the whole run instead of leaving
the other rank waiting. Every process of a launch is found by a marker in its environment and killed when the test
ends, so no rank outlives a failing test."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers.paths import REAL_SHAPED
from llava_hf.testing import make_tiny_data, make_tiny_parts

REPO = Path(__file__).resolve().parents[2]
ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")

# Only turns a hang into a failure (with the log); a normal launch on a loaded 2-core machine takes 1-3 minutes.
HANG_GUARD_SECONDS = 1200
LAUNCH_MARKER = "LLAVA_HF_TEST_LAUNCH"
DDP_CPU = REPO / "examples" / "configs" / "accelerate" / "ddp_cpu_2proc.yaml"
FSDP = REPO / "examples" / "configs" / "accelerate" / "fsdp.yaml"

pytestmark = pytest.mark.skipif(
    shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None, reason="accelerate CLI"
)


def free_port() -> int:
    # A fixed rendezvous port (accelerate's default 29500) collides with any other run on the machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def kill_marked(marker: str) -> list[int]:
    """SIGKILL every process whose environment holds `marker` (the launcher and all its ranks, whatever their
    process group: torch's elastic agent starts each rank in a session of its own); returns their pids."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
        except (OSError, ProcessLookupError):
            continue  # exited meanwhile, or not ours to read
    return killed


def launch(tmp_path: Path, entry: list[str], *overrides: str, config: Path = DDP_CPU) -> tuple[int, str]:
    """`accelerate launch` 2 CPU ranks of the tiny stage-2 recipe (real-shaped parts); returns (exit code, log).

    The launcher and its ranks carry a marker in their environment; whatever is still alive when the launcher has
    exited (or the test stops) is killed and fails the test.
    """
    vision_dir, language_dir = make_tiny_parts(tmp_path / "parts", REAL_SHAPED)
    json_path, image_folder = make_tiny_data(tmp_path / "data", num_rows=16)
    command = [
        ACCELERATE, "launch",
        "--config_file", str(config),
        "--main_process_port", str(free_port()),
        *entry,
        "train",
        "--config", str(REPO / "examples/configs/tiny_stage2_finetune.yaml"),
        "--vision_tower", str(vision_dir),
        "--language_model", str(language_dir),
        "--data_path", str(json_path),
        "--image_folder", str(image_folder),
        "--projector_path", "",  # no stage-1 projector here: start from the fresh one
        "--logging_steps", "1",
        "--disable_tqdm", "true",
        *overrides,
    ]  # fmt: skip
    marker = f"{LAUNCH_MARKER}={uuid.uuid4().hex}"
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    environment[LAUNCH_MARKER] = marker.split("=", 1)[1]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, cwd=tmp_path,
        start_new_session=True,
    )  # fmt: skip
    try:
        log, _ = process.communicate(timeout=HANG_GUARD_SECONDS)
    except subprocess.TimeoutExpired:
        kill_marked(marker)
        log, _ = process.communicate()
        pytest.fail(f"the launch hung for {HANG_GUARD_SECONDS} s:\n{log[-4000:]}")
    finally:
        leaked = kill_marked(marker)  # a rank still alive after the launcher is a leak: kill it, then fail below
        process.wait()
    assert not leaked, f"processes outlived the launcher: {leaked}"
    return process.returncode, log


@pytest.mark.slow  # two processes import torch and train: a minute or more on 2 loaded cores
def test_ddp_two_cpu_processes(tmp_path):
    output = tmp_path / "ddp"
    script = str(Path(__file__).with_name("ddp_logging_ranks.py"))  # `llava-hf train`, INFO lines with the rank
    status, log = launch(tmp_path, [script], "--output_dir", str(output), "--max_steps", "2")
    assert status == 0, log[-4000:]
    # The main process parses the JSON and checks the rows; rank 1 waits for it, then reads both from the cache.
    assert re.findall(r"rank (\d): llava_hf\.data\.formats: rows: (parsed|reusing)", log) == [
        ("0", "parsed"), ("1", "reusing")], log[-4000:]  # fmt: skip
    assert re.findall(r"rank (\d): llava_hf\.data\.check: preflight: (checked|reusing)", log) == [
        ("0", "checked"), ("1", "reusing")], log[-4000:]  # fmt: skip
    # 16 rows, 8 per process: with 2 processes one step is a whole epoch (a single process would need 2 steps).
    epochs = [float(value) for value in re.findall(r"'epoch': '([0-9.]+)'", log)]
    assert epochs[:2] == [1.0, 2.0], log[-3000:]
    assert log.count("trained 2 steps") == 2  # both ranks ran the command
    weights = load_file(str(output / "model.safetensors"))
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


@pytest.mark.slow  # like the test above
def test_a_failing_rank_ends_the_run_instead_of_hanging(tmp_path):
    script = str(Path(__file__).with_name("ddp_failing_rank.py"))
    status, log = launch(tmp_path, [script], "--output_dir", str(tmp_path / "failing"), "--max_steps", "3")
    assert status != 0 and "injected failure on rank 1" in log, log[-4000:]
    assert "trained" not in log


@pytest.mark.slow  # like the tests above
def test_the_fsdp_config_on_cpu_stops_instead_of_silently_running_ddp(tmp_path):
    # accelerate runs FSDP only with a GPU backend; on CPU it would quietly train DDP (see the README's FSDP note).
    settings = yaml.safe_load(FSDP.read_text())
    settings.update(num_processes=2, mixed_precision="no")
    config = tmp_path / "fsdp_cpu_2proc.yaml"
    config.write_text(yaml.safe_dump(settings))
    status, log = launch(tmp_path, ["-m", "llava_hf.cli"], "--output_dir", str(tmp_path / "fsdp"), config=config)
    assert status != 0 and "FSDP is not active" in log, log[-4000:]
    assert not (tmp_path / "fsdp" / "model.safetensors").exists()


def test_the_fsdp_config_constructs_and_names_layers_of_the_model():
    """Dry construction of examples/configs/accelerate/fsdp.yaml: accelerate's plugin accepts its settings and the
    layer classes it wraps exist in a model built from the real-shaped CLIP + Vicuna parts."""
    from accelerate import FullyShardedDataParallelPlugin

    from llava_hf.training import build_from_parts

    settings = yaml.safe_load(FSDP.read_text())
    assert settings["distributed_type"] == "FSDP"
    fsdp = {key.removeprefix("fsdp_"): value for key, value in settings["fsdp_config"].items()}
    class_names = fsdp.pop("transformer_layer_cls_to_wrap").split(",")
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp.pop("version"),
        auto_wrap_policy=fsdp.pop("auto_wrap_policy").lower(),
        transformer_cls_names_to_wrap=class_names,
        **fsdp,
    )
    assert plugin.fsdp_version == 2 and plugin.state_dict_type.name == "FULL_STATE_DICT"
    parts = REPO / "tests" / "assets" / "real_shaped"
    model, _ = build_from_parts(str(parts / "clip-vit-large-patch14-336"), str(parts / "vicuna-7b-v1.5"))
    present = {type(module).__name__ for module in model.modules()}
    assert set(class_names) <= present, set(class_names) - present
