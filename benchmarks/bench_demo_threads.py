# python benchmarks/bench_demo_threads.py [--steps 150] [--rounds 2] [--threads 1 2] [--num_train_images 2000]
#                                        [--work DIR] [--results FILE]
"""Seconds per stage-2 step of `llava-hf demo` with 1 and 2 torch threads, in one run (1 thread is the anchor).

Builds what `llava-hf demo` builds before stage 2 with its own functions and default sizes (the 2,000-image world,
the rule teacher's data, the stage-2 mix, the toy towers' shapes and tokenizer), except that the towers are pretrained
for a handful of steps only: a step's cost depends on the shapes and the token counts, not on the weights. Then it
trains stage 2 from the same start for `--steps` optimizer steps with each thread count in turn, `--rounds` times
(alternating, so a change in the machine's load reaches both), and reports the median seconds per step per thread
count and its ratio to 1 thread. Results: a markdown table printed and written to `--results`.
"""

import argparse
import copy
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="Stage-2 optimizer steps per measurement.")
    parser.add_argument("--rounds", type=int, default=2, help="Measurements per thread count.")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="Thread counts; the first is the anchor."
    )
    parser.add_argument(
        "--num_train_images", type=int, default=2000, help="World size (the demo's default; smaller for a smoke run)."
    )
    parser.add_argument("--work", default=None, help="Folder for the world and the runs (default: a temporary one).")
    parser.add_argument("--results", default=None, help="Also write the markdown table here.")
    options = parser.parse_args()

    from llava_hf.demo.end_to_end import (
        DemoArguments,
        build_towers,
        generate_data,
        make_world,
        stage2_rows,
        train_stage,
    )
    from llava_hf.demo.pretrain import assemble

    load_before = os.getloadavg()[0]
    work = Path(options.work or tempfile.mkdtemp(prefix="bench_demo_threads_"))
    config = DemoArguments(
        output_dir=str(work),
        num_train_images=options.num_train_images,
        clip_steps=5,
        language_model_steps=5,
        progress=False,
        threads=1,
    )
    torch.set_num_threads(1)
    world = make_world(config, work / "world")
    data = generate_data(config, world, work / "data", config.seed)
    tokenizer, clip, language_model, _, _ = build_towers(config, world, data, "cpu")
    start, processor = assemble(clip, language_model, tokenizer, config.vision_feature_layer, seed=config.seed)
    rows = stage2_rows(config, world, data, work / "data")
    samples_per_epoch = len(rows)
    epochs = options.steps * config.train_batch_size / samples_per_epoch

    seconds: dict[int, list[float]] = {threads: [] for threads in options.threads}
    for round_index in range(options.rounds):
        for threads in options.threads:
            torch.set_num_threads(threads)
            model = copy.deepcopy(start)
            run = dataclasses.replace(config, stage2_epochs=epochs, threads=threads)
            started = time.monotonic()
            _, step_seconds = train_stage("finetune", run, model, processor, rows, work / f"stage2_{threads}", "cpu")
            seconds[threads].append(step_seconds)
            print(
                f"round {round_index + 1}, {threads} thread(s): {step_seconds:.3f} s/step "
                f"({time.monotonic() - started:.1f} s wall)",
                flush=True,
            )

    anchor = statistics.median(seconds[options.threads[0]])
    lines = [
        f"Stage 2 of `llava-hf demo` (default mix, {samples_per_epoch} samples per epoch, batches of "
        f"{config.train_batch_size}, packed), {options.steps} steps per measurement, median of {options.rounds}; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"load average before the run {load_before:.2f}.",
        "",
        f"| torch threads | s / step (each round) | median | vs {options.threads[0]} |",
        "|---|---|---|---|",
    ]
    for threads, values in seconds.items():
        median = statistics.median(values)
        rounds = ", ".join(f"{value:.3f}" for value in values)
        lines.append(f"| {threads} | {rounds} | {median:.3f} | {anchor / median:.2f}x |")
    table = "\n".join(lines)
    print(table)
    if options.results:
        Path(options.results).write_text(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
