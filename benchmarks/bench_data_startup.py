# python benchmarks/bench_data_startup.py [--data /work/standins/mix665k] [--slice_rows 100000] [--convert_rows 20000]
#                                       [--json_rows N]
#                                       [--work DIR] [--results table.md] [--skip STEP ...]
"""Start-up of training on the LLaVA-1.5 stage-2 mix at real size: ours vs the original code, in one run.

Input: the stand-in built by `benchmarks/standins/make_mix665k_standin.py` (665,298 rows, ~1.1 GB of JSON, 374k image
paths, and the same conversations as a the_cauldron-style parquet file). Each measurement is a fresh subprocess; its
peak RSS is the sum of the proportional set sizes (PSS: pages shared by forked workers counted once) over its process
tree, sampled every 0.2 s, and its CPU time is user + system of the tree. The model is the tiny stage-2 demo model built from the real-shaped parts (tests/assets/real_shaped:
CLIP-L/336 and Vicuna-7B layouts, Vicuna's SentencePiece tokenizer file), so the data path is what a 7B run takes.

Measured:
- `original`: the original LLaVA start-up (the anchor): `json.load` of the file and `modality_lengths`, reproduced
  from `llava/train/train.py` (`LazySupervisedDataset`): whitespace-split word counts, negative for text-only rows.
  The original then tokenizes nothing before the first step (it has no preflight).
- `ours, cold` / `ours, cached`: `llava-hf train --stage finetune ... --max_steps 1 --group_by_modality_length true`
  with an empty cache (JSON parsed to Arrow, preflight run and cached), then the same command again; time to the
  first logged step, the preflight's own time (from its log line), peak RSS.
- the_cauldron-style parquet input: the same two runs on the first `--slice_rows` rows of the parquet file.
- `data convert`: `llava-hf data convert` on the first `--convert_rows` rows (the full mix would embed ~60 GB of
  image bytes), with rows/s to extrapolate.

The bigmem lock (/work/locks/bigmem) is taken around the original's `json.load` (several GB), measured last so that
waiting for the lock delays nothing else; the other runs stay under 2x the JSON size. Results: a markdown table printed and written to `--results`.
"""

import argparse
import fcntl
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
ANCHOR = """
import json, sys, time
started = time.perf_counter()
list_data_dict = json.load(open(sys.argv[1], "r"))
loaded = time.perf_counter()
# llava/train/train.py, LazySupervisedDataset.modality_lengths
length_list = []
for sample in list_data_dict:
    cur_len = sum(len(conv['value'].split()) for conv in sample['conversations'])
    cur_len = cur_len if 'image' in sample else -cur_len
    length_list.append(cur_len)
done = time.perf_counter()
print(json.dumps({"json_load_s": loaded - started, "modality_lengths_s": done - loaded, "rows": len(length_list)}))
"""
# `llava-hf train` with llava_hf's INFO log lines shown (the preflight says what it did and how long it took).
TRAIN = (
    "import logging, sys; "
    "logging.basicConfig(level=logging.WARNING, format='%(message)s'); "
    "logging.getLogger('llava_hf').setLevel(logging.INFO); "
    "from llava_hf.cli import main; sys.exit(main(sys.argv[1:]))"
)


def pss_bytes(process: psutil.Process) -> int:
    """The process's proportional set size: /proc/PID/smaps_rollup's total (psutil's `memory_full_info` reads the
    whole smaps file, which for a process with a torch import and a mapped 1 GB file costs the sampler a fifth of a
    core at 5 samples a second)."""
    try:
        with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        if not psutil.pid_exists(process.pid):
            raise psutil.NoSuchProcess(process.pid) from None
    return process.memory_full_info().pss


def measure(command: list[str], env: dict, first_step_pattern: str | None = None) -> dict:
    """Run `command`; wall time, time until a line matches `first_step_pattern`, peak tree RSS, CPU time, output."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, start_new_session=True
    )
    peak, cpu, stop = [0], {}, threading.Event()

    def sample():
        root = psutil.Process(process.pid)
        while not stop.is_set():
            try:
                tree = [root] + root.children(recursive=True)
                rss = 0
                for member in tree:
                    try:
                        rss += pss_bytes(member)  # forked workers share pages: count them once
                        times = member.cpu_times()
                        cpu[member.pid] = times.user + times.system
                    except psutil.NoSuchProcess:
                        pass
                peak[0] = max(peak[0], rss)
            except psutil.NoSuchProcess:
                return
            stop.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first_step, lines = None, []
    try:
        for line in process.stdout:
            lines.append(line)
            if first_step is None and first_step_pattern and re.search(first_step_pattern, line):
                first_step = time.perf_counter() - started
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, 9)
            process.wait()
        stop.set()
        sampler.join()
    output = "".join(lines)
    if process.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed ({process.returncode}):\n{output[-4000:]}")
    return {
        "wall_s": time.perf_counter() - started,
        "first_step_s": first_step,
        "peak_rss_gb": peak[0] / 1e9,
        "cpu_s": sum(cpu.values()),
        "output": output,
    }


def preflight_seconds(output: str) -> str:
    match = re.search(r"preflight: checked \d+ rows in ([0-9.]+) s", output) or re.search(
        r"preflight: reusing .*?, ([0-9.]+) s", output
    )
    return f"{float(match.group(1)):.1f}" if match else "?"


def parse_seconds(output: str) -> str:
    """The JSON -> Arrow parse's own time (its log line); "cached" when the rows file was reused, "" for parquet."""
    match = re.search(r"rows: parsed \d+ records in ([0-9.]+) s", output)
    return f"{float(match.group(1)):.1f}" if match else "cached" if "rows: reusing" in output else ""


def startup_row(label: str, result: dict, input_gb: float) -> tuple:
    """A table row for one `llava-hf train` start-up (RSS / input size: the JSON file's or the parquet file's)."""
    return (
        label,
        f"{result['first_step_s']:.1f}",
        parse_seconds(result["output"]),
        preflight_seconds(result["output"]),
        f"{result['wall_s']:.1f}",
        f"{result['cpu_s']:.1f}",
        f"{result['peak_rss_gb']:.2f}",
        f"{result['peak_rss_gb'] / input_gb:.2f}",
    )


def first_records(json_path: Path, count: int, output: Path) -> Path:
    """Write the first `count` records of a LLaVA JSON list to `output` as the original is written (indent 2), without
    loading the whole list (the stand-in is shuffled like the released file, so they are a fair sample)."""
    records = []
    with open(json_path) as file:
        decoder, buffer = json.JSONDecoder(), file.read(64 << 20)
        position = buffer.index("[") + 1
        while len(records) < count:
            while buffer[position] in " \t\r\n,":
                position += 1
            if len(buffer) - position < 16 << 20:  # keep a whole record ahead
                buffer, position = buffer[position:] + file.read(64 << 20), 0
            record, position = decoder.raw_decode(buffer, position)
            records.append(record)
    output.write_text(json.dumps(records, indent=2))
    return output


def train_command(parts: Path, output_dir: Path, data_path: Path, image_folder: Path | None) -> list[str]:
    command = [
        sys.executable,
        "-c",
        TRAIN,
        "train",
        "--config",
        str(REPO / "examples/configs/tiny_stage2_finetune.yaml"),
    ]
    command += ["--vision_tower", str(parts / "vision"), "--language_model", str(parts / "language")]
    command += ["--projector_path", "", "--data_path", str(data_path), "--output_dir", str(output_dir)]
    if image_folder is not None:
        command += ["--image_folder", str(image_folder)]
    # max_length 8192: the test tokenizer (Vicuna's layout, a 400-piece vocabulary) makes ~2.7x more tokens than
    # Vicuna's own on English, so at 2048 many ShareGPT rows would be too long; the longest are still refused and
    # skipped (--skip_bad_rows: what a user of the real mix does at 2048, where the original truncated silently).
    command += [
        "--max_steps",
        "1",
        "--max_length",
        "8192",
        "--skip_bad_rows",
        "true",
        "--group_by_modality_length",
        "true",
    ]
    command += ["--save_strategy", "no", "--logging_steps", "1", "--disable_tqdm", "true"]
    return command


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/work/standins/mix665k")
    parser.add_argument("--work", default="/work/standins/bench_data_startup")
    parser.add_argument("--slice_rows", type=int, default=100_000, help="rows of the parquet file to start on")
    parser.add_argument("--convert_rows", type=int, default=20_000, help="rows to convert")
    parser.add_argument("--json_rows", type=int, default=None, help="start on the first N rows of the JSON only")
    parser.add_argument("--results", default=None, help="where to write the table (default: --work/table.md)")
    parser.add_argument("--skip", nargs="*", default=[], help="steps to leave out: original json parquet convert")
    parser.add_argument("--json_runs", nargs="*", default=["cold", "cached"], help="which JSON start-ups to run")
    parser.add_argument("--keep_cache", action="store_true", help="keep --work (its cache) from an earlier run")
    parser.add_argument("--lock", default="/work/locks/bigmem", help="file to flock around json.load (if it exists)")
    args = parser.parse_args()
    data, work = Path(args.data), Path(args.work)
    json_path, image_folder = data / "llava_v1_5_mix665k.json", data / "images"
    if not args.keep_cache:
        shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_DATASETS_CACHE": str(work / "cache")}
    env.pop("TOKENIZERS_PARALLELISM", None)

    sys.path.insert(0, str(REPO / "src"))
    from llava_hf.testing import make_tiny_parts

    parts = work / "parts"
    if not parts.is_dir():
        make_tiny_parts(parts, REPO / "tests" / "assets" / "real_shaped")
    if args.json_rows:  # a slice, e.g. to compare two versions of the code on the same rows in less time
        json_path = first_records(json_path, args.json_rows, work / f"mix_first_{args.json_rows}.json")
    json_gb = json_path.stat().st_size / 1e9
    rows: list[tuple] = []
    header = [
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average at start "
        f"{os.getloadavg()[0]:.1f} (the machine is shared; wall times stretch with the load, CPU times do not)",
        f"data: {json_path} ({json_gb:.2f} GB, 2x = {2 * json_gb:.2f} GB)",
        "",
        "| run | time to first step (s) | JSON -> Arrow (s) | preflight (s) | wall (s) | CPU (s) | peak RSS (GB) "
        "| RSS / input size | load average (start, end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    results = Path(args.results or work / "table.md")

    def write():
        results.write_text("\n".join(header + ["| " + " | ".join(map(str, row)) + " |" for row in rows]) + "\n")
        print("\n".join(header + ["| " + " | ".join(map(str, row)) + " |" for row in rows[-1:]]), flush=True)

    step = r"'loss'|\"loss\"|\{'loss"

    def loads(started: float) -> str:
        return f"{started:.1f}, {os.getloadavg()[0]:.1f}"

    if "json" not in args.skip:
        for label in args.json_runs:
            load = os.getloadavg()[0]
            result = measure(train_command(parts, work / f"out-json-{label}", json_path, image_folder), env, step)
            (work / f"json-{label}.log").write_text(result["output"])
            rows.append(startup_row(f"ours, LLaVA JSON, {label}", result, json_gb) + (loads(load),))
            write()
    if "parquet" not in args.skip:
        import pyarrow.parquet as parquet

        source = parquet.ParquetFile(data / "mix665k_cauldron.parquet")
        sliced = work / f"cauldron_{args.slice_rows}.parquet"
        with parquet.ParquetWriter(sliced, source.schema_arrow) as writer:
            written = 0
            for batch in source.iter_batches(batch_size=2000):
                writer.write_batch(batch.slice(0, args.slice_rows - written))
                written += min(batch.num_rows, args.slice_rows - written)
                if written >= args.slice_rows:
                    break
        for label in ("cold", "cached"):
            load = os.getloadavg()[0]
            result = measure(train_command(parts, work / f"out-parquet-{label}", sliced, None), env, step)
            (work / f"parquet-{label}.log").write_text(result["output"])
            size_gb = sliced.stat().st_size / 1e9
            label = f"ours, the_cauldron parquet ({args.slice_rows} rows, {size_gb:.2f} GB), {label}"
            rows.append(startup_row(label, result, size_gb) + (loads(load),))
            write()
    if "convert" not in args.skip:
        small = first_records(json_path, args.convert_rows, work / f"mix_{args.convert_rows}.json")
        command = [sys.executable, "-m", "llava_hf.cli", "data", "convert", "--json_path", str(small)]
        command += ["--image_folder", str(image_folder), "--output_dir", str(work / "converted")]
        load = os.getloadavg()[0]
        result = measure(command, env)
        size = sum(file.stat().st_size for file in (work / "converted").rglob("*.parquet")) / 1e9
        rows.append(
            (
                f"ours, data convert ({args.convert_rows} rows -> {size:.2f} GB parquet; "
                f"{args.convert_rows / result['wall_s']:.0f} rows/s)",
                "",
                "",
                "",
                f"{result['wall_s']:.1f}",
                f"{result['cpu_s']:.1f}",
                f"{result['peak_rss_gb']:.2f}",
                "",
                loads(load),
            )
        )
        write()
        shutil.rmtree(work / "converted")

    if "original" not in args.skip:
        with open(args.lock if os.path.exists(args.lock) else os.devnull) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            load = os.getloadavg()[0]
            result = measure([sys.executable, "-c", ANCHOR, str(json_path)], env)
        anchor = json.loads(result["output"].strip().splitlines()[-1])
        rows.append(
            (
                "original: json.load + modality_lengths (anchor; then no tokenization before step 1)",
                f"{result['wall_s']:.1f} (+ model)",
                f"{anchor['json_load_s']:.1f} (json.load)",
                f"{anchor['modality_lengths_s']:.1f} (word counts)",
                f"{result['wall_s']:.1f}",
                f"{result['cpu_s']:.1f}",
                f"{result['peak_rss_gb']:.2f}",
                f"{result['peak_rss_gb'] / json_gb:.2f}",
                loads(load),
            )
        )
        write()


if __name__ == "__main__":
    main()
