# python benchmarks/bench_real_size.py --ours /work/standins/llava-1.5-7b-hf --release /work/standins/llava-1.5-7b-release --lock /work/locks/bigmem --json real_size.json --markdown real_size.md
"""Real-size CPU figures: LLaVA-1.5-7B-shaped weights, ours vs transformers' built-in Llava, each step in its own
process so every peak RSS is that step's alone.

OURS is a `llava-hf convert` output. convert writes transformers' built-in `llava` layout whenever the model fits
it (LLaVA-1.5 does), so by default the built-in side loads the very same folder; `--builtin DIR` names another
folder (made by `llava-hf export` when missing, e.g. for a checkpoint saved in the older `llava_hf` format).

Steps (each a subprocess, its peak RSS read by /usr/bin/time -v or, for the in-process workers and the server,
VmHWM):
- convert (with --release SRC): `llava-hf convert SRC TMP`, output deleted afterwards.
- export: `llava-hf export --to transformers OURS DST`, into BUILTIN when that is missing, else into a scratch
  folder deleted afterwards.
- `llava-hf generate` with `--dtype float32` (must exit 2 before loading on a 24 GiB machine), then `generate`,
  `chat` (one question on stdin), `serve` (one HTTP request to /v1/chat/completions; the server's own VmHWM) and
  `evaluate` (POPE, the two questions of tests/assets/evaluation/pope's random split), all with default flags
  (dtype auto) and a few new tokens.
- per dtype (bfloat16, float16) and implementation: load, then one image question with greedy decoding: time to
  first token (prefill + first token), decode tokens/s over the next tokens, peak RSS after loading and after
  generating, and the generated ids (ours and the built-in must agree). Ours loads through `load_checkpoint` (the
  loader of every command), the built-in through stock `LlavaForConditionalGeneration.from_pretrained(dtype=...)`
  and `AutoProcessor` (llava_hf is not imported in that process).
Build the stand-ins with benchmarks/standins/make_release_standin.py. `--worker` is the internal per-step entry.
"""

import argparse
import base64
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "What is shown in this image? Describe it."
POPE = ROOT / "tests" / "assets" / "evaluation" / "pope"
SERVE_LINE = re.compile(r"llava-hf serve: .* on (http://[\d.]+:\d+)")


def vm_hwm_gib(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


LOCK = []  # ["flock", PATH] with --lock: each step waits for the shared big-memory lock, holding it only while it runs


@contextmanager
def held_lock():
    """The --lock file held by this process (for the server step, whose process must outlive one command)."""
    if not LOCK:
        yield
        return
    with open(LOCK[1], "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def timed_command(command: list[str], stdin: str | None = None) -> dict:
    """Run `command` under /usr/bin/time -v: exit status, wall seconds (waiting for the lock included), CPU
    seconds, peak RSS (GiB), the `llava-hf` lines of stderr."""
    start = time.perf_counter()
    result = subprocess.run(
        [*LOCK, "/usr/bin/time", "-v", *command], input=stdin, capture_output=True, text=True, env=environment()
    )
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    cpu = [float(value) for value in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", result.stderr)]
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", result.stderr)
    messages = [line for line in result.stderr.splitlines() if line.startswith("llava-hf")]
    return {
        "command": " ".join(command),
        "returncode": result.returncode,
        "seconds": clock_seconds(wall.group(1)) if wall else round(time.perf_counter() - start, 1),
        "cpu_seconds": round(sum(cpu), 1) if cpu else None,
        "peak_rss_gib": round(int(peak.group(1)) / 2**20, 2) if peak else None,
        "load_average": os.getloadavg()[0],
        "messages": messages,
        "stdout": result.stdout.strip()[-300:],
    }


def clock_seconds(text: str) -> float:
    """`1:02:03.5` / `2:03.5` (time -v's elapsed time) in seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return round(seconds, 1)


def png_data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def serve_step(cli: list[str], model: str, image: Path, max_tokens: int) -> dict:
    """`llava-hf serve --model MODEL --port 0` (default flags otherwise), one chat completion with an image over HTTP;
    the peak is the server process's VmHWM, read before it is stopped."""
    command = [*cli, "serve", "--model", model, "--port", "0"]
    row = {"command": " ".join(command), "returncode": None, "peak_rss_gib": None, "messages": [], "stdout": ""}
    with held_lock(), tempfile.TemporaryFile("w+") as log:
        start = time.perf_counter()
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, env=environment(), start_new_session=True
        )
        try:
            url = None
            for line in server.stdout:  # the address is printed once the model is loaded and the port is open
                if match := SERVE_LINE.search(line):
                    url = match.group(1)
                    break
            if url is not None:
                with urllib.request.urlopen(f"{url}/v1/models") as response:
                    served_name = json.loads(response.read())["data"][0]["id"]
                body = {
                    "model": served_name,
                    "max_tokens": max_tokens,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "image_url", "image_url": {"url": png_data_url(image)}},
                                {"type": "text", "text": QUESTION},
                            ],
                        }
                    ],
                }
                request = urllib.request.Request(
                    f"{url}/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
                )
                with urllib.request.urlopen(request) as response:
                    answer = json.loads(response.read())
                row["returncode"] = 0
                row["stdout"] = answer["choices"][0]["message"]["content"][-300:]
                row["completion_tokens"] = answer["usage"]["completion_tokens"]
            row["peak_rss_gib"] = round(vm_hwm_gib(server.pid), 2)
            with open(f"/proc/{server.pid}/stat") as handle:  # utime + stime, in clock ticks
                fields = handle.read().rsplit(")", 1)[1].split()
            row["cpu_seconds"] = round((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), 1)
        finally:
            try:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()
            except ProcessLookupError:
                pass
        if row["returncode"] is None:
            row["returncode"] = server.returncode
        row["seconds"] = round(time.perf_counter() - start, 1)
        row["load_average"] = os.getloadavg()[0]
        log.seek(0)
        row["messages"] = [line for line in log.read().splitlines() if line.startswith("llava-hf")]
    return row


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
            same = (
                ""
                if name == "builtin" or "generated_ids" not in builtin
                else str(row["generated_ids"] == builtin["generated_ids"])
            )
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
    lines += [
        "",
        "| step | command | exit | wall (s) | CPU (s) | load average | peak RSS (GiB) | peak / 16-bit weights | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for step, row in report["commands"].items():
        note = "; ".join(row["messages"])[:300].replace("|", "/")
        peak = row["peak_rss_gib"]
        ratio = f"{peak / weights['bfloat16']:.2f}" if peak else ""
        load = row.get("load_average")
        command = row["command"].replace(f"{sys.executable} -m llava_hf.cli", "llava-hf")
        lines.append(
            f"| {step} | `{command}` | {row['returncode']} | {row['seconds']} | {row.get('cpu_seconds')} "
            f"| {'' if load is None else f'{load:.1f}'} | {peak} | {ratio} | {note} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ours", help="our converted checkpoint (llava-hf convert output; required)")
    parser.add_argument(
        "--builtin",
        help="the built-in layout of the same weights (default: OURS itself when it is saved in the built-in llava "
        "format, as convert writes it, else OURS-builtin; made by export if missing)",
    )
    parser.add_argument("--release", help="an original release folder: also measure `llava-hf convert` on it")
    parser.add_argument("--dtypes", default="bfloat16,float16")
    parser.add_argument("--new_tokens", type=int, default=8)
    parser.add_argument("--json", type=Path, default=Path("real_size.json"))
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    parser.add_argument("--lock", help="run each step under `flock LOCK` (a machine shared by memory-hungry jobs)")
    parser.add_argument(
        "--steps",
        default="commands,generation",
        help="commands (the llava-hf commands), generation (ours vs built-in per dtype), or both",
    )
    parser.add_argument("--worker", choices=["ours", "builtin"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.dtype, args.new_tokens)))
        return
    if not args.ours:
        parser.error("--ours is required")

    import torch
    import transformers

    if args.lock:
        LOCK.extend(["flock", args.lock])
    cli = [sys.executable, "-m", "llava_hf.cli"]
    steps = set(args.steps.split(","))
    builtin = args.builtin or (args.ours if saved_as_builtin(args.ours) else f"{args.ours.rstrip('/')}-builtin")
    commands = {}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB RAM",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "weights_gib": weights_gib(args.ours),
        "ours": args.ours,
        "builtin": builtin,
        "commands": commands,
        "generation": {},
    }

    def save():  # after every step, so a run cut short still leaves what it measured
        args.json.write_text(json.dumps(report, indent=2))
        if args.markdown:
            args.markdown.write_text(markdown(report))

    if "commands" in steps:
        scratch_parent = Path(args.ours).resolve().parent  # outputs as big as the checkpoint: same disk, then deleted
        if args.release:
            with tempfile.TemporaryDirectory(dir=scratch_parent) as scratch:
                commands["convert"] = timed_command([*cli, "convert", args.release, str(Path(scratch) / "out")])
            save()
        with tempfile.TemporaryDirectory(dir=scratch_parent) as scratch:
            destination = builtin if not Path(builtin).exists() else str(Path(scratch) / "out")
            commands["export"] = timed_command([*cli, "export", "--to", "transformers", args.ours, destination])
        save()
    elif not Path(builtin).exists():
        commands["export"] = timed_command([*cli, "export", "--to", "transformers", args.ours, builtin])
    work = Path(tempfile.mkdtemp())
    image = work / "photo.png"
    from PIL import Image

    Image.new("RGB", (640, 480), (120, 60, 30)).save(image)
    if "commands" in steps:
        tokens = ["--max_new_tokens", "4"]
        question = ["--image", str(image), "--prompt", QUESTION, *tokens]
        commands["generate --dtype float32"] = timed_command(
            [*cli, "generate", "--model", args.ours, "--dtype", "float32", *question]
        )
        save()
        for step, command, stdin in (
            ("generate (default flags)", [*cli, "generate", "--model", args.ours, *question], None),
            ("chat (default flags)", [*cli, "chat", "--model", args.ours, "--image", str(image), *tokens], QUESTION),
        ):
            commands[step] = timed_command(command, stdin=stdin)
            save()
        commands["serve (default flags, one request)"] = serve_step(cli, args.ours, image, max_tokens=4)
        save()
        evaluation = [*cli, "evaluate", "--task", "pope", "--model", args.ours, "--data", str(POPE)]
        evaluation += ["--pope_splits", "random", "--max_new_tokens", "3", "--no_progress"]
        commands["evaluate (default flags, POPE 2 questions)"] = timed_command(
            [*evaluation, "--output_dir", str(work / "evaluation")]
        )
        save()
    if "generation" in steps:
        for dtype in args.dtypes.split(","):
            for name, folder in (("ours", args.ours), ("builtin", builtin)):
                report["generation"].setdefault(dtype, {})[name] = run_worker(name, folder, dtype, args.new_tokens)
                save()
    print(markdown(report))
    shutil.rmtree(work, ignore_errors=True)


def saved_as_builtin(folder: str) -> bool:
    """Whether `folder` holds transformers' built-in llava config (what convert and save_pretrained write)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    return config.get("model_type") == "llava"


if __name__ == "__main__":
    main()
