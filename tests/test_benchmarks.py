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


@pytest.mark.slow
def test_demo_threads_benchmark_times_stage2_with_each_thread_count(tmp_path):
    results = tmp_path / "threads.md"
    run_script(
        "bench_demo_threads.py", "--steps", "3", "--rounds", "1", "--num_train_images", "60",
        "--work", str(tmp_path / "work"), "--results", str(results),
    )  # fmt: skip
    rows = [
        line.split(" | ")
        for line in results.read_text().splitlines()
        if line.startswith("| 1 |") or line.startswith("| 2 |")
    ]
    assert [row[0] for row in rows] == ["| 1", "| 2"]
    assert all(float(row[2]) > 0 for row in rows) and rows[0][3] == "1.00x |"


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


@pytest.mark.slow
def test_real_size_benchmark_runs_on_a_tiny_checkpoint(tmp_path, monkeypatch):
    """The same steps as the 7B run, on a tiny fp16 checkpoint, with LLAVA_HF_AVAILABLE_MEMORY standing in for a
    machine where float32 does not fit but 16 bits do. The checkpoint is saved in the built-in layout, so the
    built-in side loads the same folder and export is measured into a scratch folder."""
    import torch

    from llava_hf.testing import make_tiny_model, make_tiny_processor

    ours = tmp_path / "ours"
    model = make_tiny_model().to(torch.float16)
    model.save_pretrained(ours)
    make_tiny_processor().save_pretrained(ours)
    parameters = sum(p.numel() for p in model.parameters())
    monkeypatch.setenv("LLAVA_HF_AVAILABLE_MEMORY", str(3 * parameters))  # 2 bytes x 1.1 fit, 4 bytes do not
    report_path, table_path = tmp_path / "report.json", tmp_path / "table.md"
    run_script(
        "bench_real_size.py",
        *("--ours", str(ours), "--new_tokens", "3", "--json", str(report_path), "--markdown", str(table_path)),
    )
    report = json.loads(report_path.read_text())
    assert report["builtin"] == str(ours)
    assert report["commands"]["export"]["returncode"] == 0 and sorted(p.name for p in tmp_path.iterdir()) == [
        "ours",
        "report.json",
        "table.md",
    ]
    for step in ("generate", "chat", "serve", "evaluate"):
        (row,) = [row for name, row in report["commands"].items() if name.startswith(f"{step} (default flags")]
        assert row["returncode"] == 0 and row["peak_rss_gib"] > 0, row
    assert report["commands"]["serve (default flags, one request)"]["completion_tokens"] >= 1
    refused = report["commands"]["generate --dtype float32"]
    assert refused["returncode"] == 2 and "of memory is available" in refused["messages"][-1]
    for dtype in ("bfloat16", "float16"):
        ours_row, builtin_row = report["generation"][dtype]["ours"], report["generation"][dtype]["builtin"]
        assert ours_row["loaded_dtype"] == builtin_row["loaded_dtype"] == dtype
        assert len(ours_row["generated_ids"]) == 3 and ours_row["generated_ids"] == builtin_row["generated_ids"]
        assert ours_row["decode_tok_s"] > 0 and ours_row["peak_rss_gib"] > 0
    assert "| bfloat16 | ours / built-in |" in table_path.read_text()


@pytest.mark.slow
def test_quantized_benchmark_compares_bf16_4bit_and_8bit_with_the_builtin_model(tmp_path):
    pytest.importorskip("bitsandbytes")
    output = tmp_path / "quantized.json"
    run_script("bench_quantized.py", "--source", "tiny", "--workdir", str(tmp_path), "--output", str(output))
    report = json.loads(output.read_text())
    rows = {(row["implementation"], row["precision"]): row for row in report["rows"]}
    assert set(rows) == {
        (implementation, precision)
        for implementation in ("llava_hf", "transformers")
        for precision in ("bf16", "4-bit stored", "8-bit stored")
    } | {("llava_hf", "4-bit at load")}
    for row in rows.values():
        assert row["peak_rss_gib"] > 0 and row["load_s"] > 0 and row["prefill_s"] > 0 and row["decode_tok_s"] > 0
        assert len(row["tokens"]) == 8 and 0 <= row["agreement"] <= 8
    # the same files give the same tokens in both implementations, and stored 4-bit = 4-bit at load time
    for precision in ("bf16", "4-bit stored", "8-bit stored"):
        assert rows[("llava_hf", precision)]["tokens"] == rows[("transformers", precision)]["tokens"]
    assert rows[("llava_hf", "4-bit stored")]["tokens"] == rows[("llava_hf", "4-bit at load")]["tokens"]
    assert [made["bits"] for made in report["quantize"]] == [4, 8]
