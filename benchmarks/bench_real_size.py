# python benchmarks/bench_real_size.py --ours /work/standins/llava-1.5-7b-hf --builtin /work/standins/llava-1.5-7b-builtin --release /work/standins/llava-1.5-7b-release --lock /work/locks/bigmem --json real_size.json --markdown real_size.md
"""Real-size CPU figures: LLaVA-1.5-7B-shaped weights, ours vs transformers' built-in Llava, each step in its own
process so every peak RSS is that step's alone.

Steps (each a subprocess, its peak RSS read by /usr/bin/time -v or, for the in-process workers, VmHWM):
- convert (with --release SRC): `llava-hf convert SRC TMP`, output deleted afterwards.
- export: `llava-hf export --to transformers OURS BUILTIN` when BUILTIN does not exist yet (the built-in's weights).
- per dtype (bfloat16, float16) and implementation: load, then one image question with greedy decoding: time to
  first token (prefill + first token), decode tokens/s over the next tokens, peak RSS after loading and after
  generating, and the generated ids (ours and the built-in must agree). Ours loads through `load_checkpoint` (the
  loader of every command), the built-in through `LlavaForConditionalGeneration.from_pretrained(dtype=...)`.
- `llava-hf generate` with default flags (dtype auto), and with `--dtype float32` (which must exit 2 before
  loading on a 24 GiB machine).
Build the stand-ins with benchmarks/standins/make_release_standin.py. `--worker` is the internal per-step entry.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is shown in this image? Describe it."


def vm_hwm_gib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


LOCK = []  # ["flock", PATH] with --lock: each step waits for the shared big-memory lock, holding it only while it runs


def timed_command(command: list[str]) -> dict:
    """Run `command` under /usr/bin/time -v: exit status, wall seconds, peak RSS (GiB), the last stderr line."""
    start = time.perf_counter()
    result = subprocess.run([*LOCK, "/usr/bin/time", "-v", *command], capture_output=True, text=True, env=environment())
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    messages = [line for line in result.stderr.splitlines() if line.startswith("llava-hf")]
    return {
        "command": " ".join(command),
        "returncode": result.returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "peak_rss_gib": round(int(peak.group(1)) / 2**20, 2) if peak else None,
        "messages": messages,
        "stdout": result.stdout.strip()[-300:],
    }


def environment() -> dict:
    return dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


def worker(implementation: str, model: str, dtype: str, new_tokens: int) -> dict:
    """Load one model and answer one image question in this process; returns the timings and peaks."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import AutoProcessor
    from transformers.generation.streamers import BaseStreamer

    start = time.perf_counter()
    if implementation == "ours":
        from llava_hf.utils.loading import load_checkpoint

        loaded, processor = load_checkpoint(model, dtype=dtype, device="cpu")
    else:
        from transformers import LlavaForConditionalGeneration

        import llava_hf  # noqa: F401  (the exported processor config names llava_hf's image processor class)

        loaded = LlavaForConditionalGeneration.from_pretrained(model, dtype=getattr(torch, dtype)).eval()
        processor = AutoProcessor.from_pretrained(model)
    load_seconds = time.perf_counter() - start
    load_peak = vm_hwm_gib()

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(loaded.dtype)

    class Clock(BaseStreamer):  # generate hands the prompt first, then each new token
        def __init__(self):
            self.times = []

        def put(self, value):
            self.times.append(time.perf_counter())

        def end(self):
            pass

    clock = Clock()
    start = time.perf_counter()
    with torch.inference_mode():
        output = loaded.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, streamer=clock
        )
    token_times = clock.times[1:]
    return {
        "implementation": implementation,
        "dtype": dtype,
        "loaded_dtype": str(loaded.dtype).removeprefix("torch."),
        "prompt_tokens": inputs["input_ids"].shape[1],
        "load_s": round(load_seconds, 1),
        "load_peak_rss_gib": round(load_peak, 2),
        "ttft_s": round(token_times[0] - start, 2),
        "decode_tok_s": round((len(token_times) - 1) / (token_times[-1] - token_times[0]), 3),
        "peak_rss_gib": round(vm_hwm_gib(), 2),
        "generated_ids": output[0, inputs["input_ids"].shape[1] :].tolist(),
        "threads": torch.get_num_threads(),
    }


def run_worker(implementation: str, model: str, dtype: str, new_tokens: int) -> dict:
    command = [sys.executable, __file__, "--worker", implementation, "--model", model, "--dtype", dtype]
    result = subprocess.run(
        [*LOCK, *command, "--new_tokens", str(new_tokens)], capture_output=True, text=True, env=environment()
    )
    if result.returncode != 0:
        return {"implementation": implementation, "dtype": dtype, "error": result.stderr.strip()[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def weights_gib(folder: str) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from llava_hf.utils.memory import read_weights_size

    size = read_weights_size(folder)
    return {name: size.bytes_at(name) / 2**30 for name in ("float32", "bfloat16")}


def markdown(report: dict) -> str:
    weights = report["weights_gib"]
    lines = [
        f"Machine: {report['machine']}; torch {report['torch']}, transformers {report['transformers']}.",
        f"Weights: {weights['bfloat16']:.2f} GiB at 16 bits, {weights['float32']:.2f} GiB at float32.",
        "",
        "| dtype | implementation | load (s) | peak RSS after load (GiB) | time to first token (s) | decode (tok/s) "
        "| peak RSS (GiB) | peak / 16-bit weights | same tokens as built-in |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for dtype, pair in report["generation"].items():
        builtin = pair.get("builtin", {})
        for name in ("ours", "builtin"):
            row = pair.get(name)
            if row is None:  # not measured (yet)
                continue
            if "error" in row:
                lines.append(f"| {dtype} | {name} | failed: {row['error'][-120:]} | | | | | | |")
                continue
            same = "" if name == "builtin" else str(row.get("generated_ids") == builtin.get("generated_ids"))
            ratio = row["peak_rss_gib"] / weights["bfloat16"]
            lines.append(
                f"| {dtype} | {name} | {row['load_s']} | {row['load_peak_rss_gib']} | {row['ttft_s']} "
                f"| {row['decode_tok_s']} | {row['peak_rss_gib']} | {ratio:.2f} | {same} |"
            )
        if "ours" in pair and "builtin" in pair and "error" not in pair["ours"] and "error" not in builtin:
            ours = pair["ours"]
            lines.append(
                f"| {dtype} | ours / built-in | {ours['load_s'] / builtin['load_s']:.2f} "
                f"| {ours['load_peak_rss_gib'] / builtin['load_peak_rss_gib']:.2f} "
                f"| {ours['ttft_s'] / builtin['ttft_s']:.2f} | {ours['decode_tok_s'] / builtin['decode_tok_s']:.2f} "
                f"| {ours['peak_rss_gib'] / builtin['peak_rss_gib']:.2f} | | |"
            )
    lines += ["", "| step | command | exit | wall (s) | peak RSS (GiB) | note |", "|---|---|---|---|---|---|"]
    for step, row in report["commands"].items():
        note = "; ".join(row["messages"])[:300].replace("|", "/")
        lines.append(
            f"| {step} | `{row['command']}` | {row['returncode']} | {row['seconds']} | {row['peak_rss_gib']} | {note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ours", help="our converted checkpoint (llava-hf convert output)")
    parser.add_argument("--builtin", help="the built-in layout of the same weights (made by export if missing)")
    parser.add_argument("--release", help="an original release folder: also measure `llava-hf convert` on it")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--new_tokens", type=int, default=8)
    parser.add_argument("--json", type=Path, default=Path("real_size.json"))
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--lock", help="run each step under `flock LOCK` (a machine shared by memory-hungry jobs)")
    parser.add_argument("--worker", choices=["ours", "builtin"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.dtype, args.new_tokens)))
        return

    import torch
    import transformers

    if args.lock:
        LOCK.extend(["flock", args.lock])
    cli = [sys.executable, "-m", "llava_hf.cli"]
    commands = {}
    if args.release:  # first: its output is deleted before the export takes the same room on disk
        with tempfile.TemporaryDirectory(dir=Path(args.ours).parent) as scratch:
            commands["convert"] = timed_command([*cli, "convert", args.release, str(Path(scratch) / "converted")])
    if not Path(args.builtin).exists():
        commands["export"] = timed_command([*cli, "export", "--to", "transformers", args.ours, args.builtin])
    image = Path(tempfile.mkdtemp()) / "photo.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (120, 60, 30)).save(image)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "weights_gib": weights_gib(args.ours),
        "commands": commands,
        "generation": {},
    }

    def save():  # after every step, so a run cut short still leaves what it measured
        args.json.write_text(json.dumps(report, indent=2))
        if args.markdown:
            args.markdown.write_text(markdown(report))

    question = ["--image", str(image), "--prompt", QUESTION, "--max_new_tokens", "4"]
    commands["generate --dtype float32"] = timed_command(
        [*cli, "generate", "--model", args.ours, "--dtype", "float32", *question]
    )
    commands["generate (default flags)"] = timed_command([*cli, "generate", "--model", args.ours, *question])
    save()
    for dtype in args.dtypes.split(","):
        for name, folder in (("ours", args.ours), ("builtin", args.builtin)):
            report["generation"].setdefault(dtype, {})[name] = run_worker(name, folder, dtype, args.new_tokens)
            save()
    print(markdown(report))
    shutil.rmtree(image.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
