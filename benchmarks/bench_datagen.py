"""python benchmarks/bench_datagen.py

Throughput of the teacher client and of the whole generation pipeline against the local test server with a fixed
latency L per reply: with concurrency N the ideal is N / L requests per second. Prints a markdown table (the figures
in benchmarks/RESULTS_datagen.md come from it). Offline, CPU only, about a minute.
"""

import tempfile
import time
from pathlib import Path

from llava_hf.datagen.inputs import read_jsonl_images
from llava_hf.datagen.pipeline import GenerateDataArguments, run_generation
from llava_hf.testing import OpenAIServer, TeacherScript
from llava_hf.utils.endpoints import ChatClient, ChatResult

ROOT = Path(__file__).resolve().parents[1]
CAPS_BOXES = ROOT / "tests" / "assets" / "datagen" / "caps_boxes_coco2014_val_80.jsonl"  # the 80 released images

WAVES = 10  # requests per run = WAVES * concurrency, so each run lasts about WAVES * latency


def bench_client(latency: float, concurrency: int) -> tuple[int, float]:
    with OpenAIServer(latency=latency) as server:
        client = ChatClient(server.base_url, model="bench", concurrency=concurrency)
        messages = [[{"role": "user", "content": f"request {i}"}] for i in range(WAVES * concurrency)]
        started = time.perf_counter()
        results = client.complete_many(messages)
        elapsed = time.perf_counter() - started
        client.close()
    assert all(isinstance(result, ChatResult) for result in results)
    return len(results), elapsed


def bench_pipeline(latency: float, concurrency: int) -> tuple[int, float]:
    """A full run: prompts, HTTP, parsing, validation, an fsync'd journal line per request, outputs."""
    teacher = TeacherScript(read_jsonl_images(CAPS_BOXES))
    with OpenAIServer(responder=teacher, latency=latency) as server, tempfile.TemporaryDirectory() as output_dir:
        config = GenerateDataArguments(
            output_dir=output_dir,
            input=str(CAPS_BOXES),
            teacher_base_url=server.base_url,
            teacher_model="bench",
            concurrency=concurrency,
        )
        started = time.perf_counter()
        summary = run_generation(config, progress=False)
        elapsed = time.perf_counter() - started
    assert summary["pending"] == 0
    return summary["requests_this_run"], elapsed


def main() -> None:
    print("| what | L (s) | N | requests | seconds | req/s | ideal N/L | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    runs = [("client", bench_client, 0.1, n) for n in (1, 8, 32, 64)]
    runs += [("client", bench_client, 0.5, n) for n in (16, 64)]
    runs += [("pipeline", bench_pipeline, 0.1, n) for n in (8, 32, 64)]
    for name, bench, latency, concurrency in runs:
        requests, seconds = bench(latency, concurrency)
        rate, ideal = requests / seconds, concurrency / latency
        print(
            f"| {name} | {latency} | {concurrency} | {requests} | {seconds:.2f} | {rate:.1f} | {ideal:.0f} "
            f"| {rate / ideal:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
