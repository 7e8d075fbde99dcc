# python benchmarks/bench_serving.py [--requests 48 --max_tokens 32 --concurrency 1 4 16]
"""Serving throughput: dynamic batching against one-request-at-a-time serving, for 1, 4 and 16 concurrent clients.

Both servers are the real `llava-hf serve` in a subprocess with the tiny test preset (CLIP 32 px + 2-layer Llama,
`llava_hf.testing`) on CPU; only --max_batch_size differs (1 = one at a time, the anchor). The clients run in this
process, each sending one image + question at a time over HTTP. EOS is suppressed in the benchmark checkpoint's
generation config so that every answer is exactly --max_tokens long and both servers do the same work.
Prints a Markdown table: requests/s, generated tokens/s, median latency, and the speed-up over the anchor.
"""

import argparse
import base64
import http.client
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from llava_hf.testing import make_image, make_tiny_model, make_tiny_processor


def save_checkpoint(folder: Path) -> None:
    model, processor = make_tiny_model(), make_tiny_processor()
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]  # fixed-length answers
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def start_server(checkpoint: Path, max_batch_size: int, threads: int, batch_wait_ms: float):
    command = [sys.executable, "-m", "llava_hf.cli", "serve", "--model", str(checkpoint), "--port", "0"]
    command += [
        "--max_batch_size",
        str(max_batch_size),
        "--batch_wait_ms",
        str(batch_wait_ms),
        "--max_concurrent_requests",
        "256",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS=str(threads))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    for line in process.stdout:
        if match := re.search(r"on http://([\d.]+):(\d+)", line):
            return process, match.group(1), int(match.group(2))
    raise RuntimeError("the server did not start")


def request_body(index: int, max_tokens: int) -> bytes:
    buffer = io.BytesIO()
    make_image(index % 8).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": f"Question {index}?"}]
    body = {"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0}
    return json.dumps(body).encode()


def run_clients(host: str, port: int, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], int]:
    """Send all bodies with `concurrency` clients; returns (wall seconds, latencies, generated tokens)."""

    def one(body: bytes) -> tuple[float, int]:
        connection = http.client.HTTPConnection(host, port, timeout=600)
        start = time.perf_counter()
        connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = json.loads(response.read())
        connection.close()
        if response.status != 200:
            raise RuntimeError(payload)
        return time.perf_counter() - start, payload["usage"]["completion_tokens"]

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        results = list(pool.map(one, bodies))
    wall = time.perf_counter() - start
    return wall, [latency for latency, _ in results], sum(tokens for _, tokens in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48, help="requests per measurement")
    parser.add_argument("--max_tokens", type=int, default=32, help="tokens generated per request")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16], help="concurrent clients")
    parser.add_argument("--max_batch_size", type=int, default=16, help="batch limit of the batching server")
    parser.add_argument("--batch_wait_ms", type=float, default=5.0, help="batch collection window of the server")
    parser.add_argument("--server_threads", type=int, default=1, help="torch threads in the server (OMP_NUM_THREADS)")
    args = parser.parse_args()

    bodies = [request_body(index, args.max_tokens) for index in range(args.requests)]
    rows = {}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "tiny"
        save_checkpoint(checkpoint)
        for label, batch_size in (
            ("one at a time", 1),
            (f"dynamic batching (max {args.max_batch_size})", args.max_batch_size),
        ):
            process, host, port = start_server(checkpoint, batch_size, args.server_threads, args.batch_wait_ms)
            try:
                run_clients(host, port, bodies[:4], 4)  # warm-up
                for concurrency in args.concurrency:
                    wall, latencies, tokens = run_clients(host, port, bodies, concurrency)
                    assert tokens == args.requests * args.max_tokens, "answers were not of fixed length"
                    latency = (statistics.median(latencies), max(latencies))
                    rows[(label, concurrency)] = (args.requests / wall, tokens / wall, latency)
            finally:
                process.terminate()
                process.wait()

    anchor = "one at a time"
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    print(f"requests per measurement: {args.requests}, tokens per answer: {args.max_tokens}\n")
    print(f"server torch threads: {args.server_threads}, --batch_wait_ms {args.batch_wait_ms}\n")
    print("| server | clients | requests/s | generated tokens/s | latency median / max (s) | vs one at a time |")
    print("|---|---|---|---|---|---|")
    for (label, concurrency), (requests_per_s, tokens_per_s, latency) in rows.items():
        ratio = requests_per_s / rows[(anchor, concurrency)][0]
        median, longest = latency
        print(
            f"| {label} | {concurrency} | {requests_per_s:.2f} | {tokens_per_s:.0f} | {median:.3f} / {longest:.3f} "
            f"| {ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
