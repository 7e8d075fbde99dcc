"""The benchmark scripts run end to end on CPU with tiny settings and report what their RESULTS files quote."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_script(script: str, *arguments: str) -> None:
    """Run benchmarks/<script> in its own process group; the group is killed whatever happens to the test."""
    environment = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate()
        assert process.returncode == 0, output[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.mark.slow
def test_gpu_driver_runs_inference_and_training_against_the_builtin_model(tmp_path):
    output = tmp_path / "report.json"
    run_script("run_gpu_7b.py", "--preset", "tiny", "--quick", "--output", str(output))
    report = json.loads(output.read_text())
    assert report["preset"] == "tiny" and report["anchors_builtin_h200"]["decode batch 8 dynamic (tok/s)"] == 381
    inference_rows = report["inference"]["rows"]
    assert {"prefill 1 image + 40 tokens (ms, lower is better)", "decode batch 8, dynamic cache (tok/s)"} <= set(
        inference_rows
    )
    for values in inference_rows.values():
        assert set(values) == {"llava_hf", "builtin"} and all(value > 0 for value in values.values())
    summary = report["training"]["summary"]
    configurations = {(row["implementation"], row["batches"]) for row in summary}
    assert configurations == {("trl-builtin", "padded"), ("ours", "padded"), ("ours", "padding-free")}
    assert all(row["tokens/s"]["min"] > 0 for row in summary)
    losses = [row["first_loss"] for row in summary]  # same weights, same rows, same supervised tokens
    assert max(losses) - min(losses) < 1e-2
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow
def test_preprocessing_benchmark_checks_the_original_numbers(tmp_path):
    output = tmp_path / "preprocessing.json"
    run_script("bench_preprocessing.py", "--rounds", "1", "--images", "2", "--json", str(output))
    report = json.loads(output.read_text())
    assert report["max_abs_difference_vs_original"]["ours"] == 0.0
    assert {row["processor"] for row in report["rows"]} >= {"ours", "builtin-pil", "decode only"}


@pytest.mark.slow
def test_collator_benchmark_compares_with_trl_on_the_same_supervised_tokens(tmp_path):
    output = tmp_path / "collator.json"
    run_script("bench_collator.py", "--rounds", "1", "--rows", "8", "--json", str(output))
    report = json.loads(output.read_text())
    supervised = report["supervised_tokens_first_batch"]
    assert supervised["ours padded"] == supervised["trl"] > 0
    assert {(row["collator"], row["rows"]) for row in report["rows"]} == {
        (name, kind) for name in ("ours padded", "ours padding-free", "trl") for kind in ("with images", "text only")
    }


@pytest.mark.slow  # builds a 300-row stand-in, then six short runs (four tiny trainings): minutes on 2 loaded cores
def test_data_startup_benchmark_runs_on_a_small_mix_standin(tmp_path):
    process = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/standins/make_mix665k_standin.py"), "--rows", "300", "--output",
         str(tmp_path / "mix")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert process.returncode == 0, process.stderr[-3000:]
    records = json.loads((tmp_path / "mix" / "llava_v1_5_mix665k.json").read_text())
    assert len(records) == 300 and 0.02 < sum("image" not in record for record in records) / 300 < 0.12
    assert all((tmp_path / "mix" / "images" / record["image"]).is_file() for record in records if "image" in record)
    results = tmp_path / "results.md"
    run_script(
        "bench_data_startup.py", "--data", str(tmp_path / "mix"), "--work", str(tmp_path / "work"),
        "--slice_rows", "200", "--convert_rows", "50", "--results", str(results), "--lock", str(tmp_path / "lock"),
    )  # fmt: skip
    table = results.read_text()
    for row in ("ours, LLaVA JSON, cold", "ours, LLaVA JSON, cached", "parquet (200 rows", "data convert (50 rows",
                "original: json.load + modality_lengths"):  # fmt: skip
        assert row in table, table
