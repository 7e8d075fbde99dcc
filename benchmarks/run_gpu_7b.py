# python benchmarks/run_gpu_7b.py --output gpu_7b.json   (one GPU; CPU check: --preset tiny --quick)
"""The issue-16 GPU table in one run: inference and training, llava_hf vs transformers' built-in Llava, one JSON.

Runs `bench_inference.py` (prefill, decode batch 1 / 8 with the dynamic cache, batch 1 with the static cache compiled
by generate) and `bench_training.py` (stage 1, stage 2 and LoRA steps, ours padded / padding-free vs plain TRL on the
built-in model) in this process with the `llava-1.5-7b` preset: random bf16 weights shaped like CLIP ViT-L/14-336 +
Llama-7B, so nothing is downloaded. Both compare against the built-in model holding the same weights in the same run.
The output JSON holds both reports, the machine, the versions, and the H200 anchors and goals of the issue next to
them, so the table can be filled from it. `--preset tiny --quick` runs the same code on a CPU in about a minute
(what the test does).
"""

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_inference  # noqa: E402
import bench_training  # noqa: E402

# The issue's figures for transformers' built-in Llava on one H200 (transformers 5.24), and the goals for ours.
ANCHORS_H200 = {
    "prefill 617 tokens (ms)": 37.6,
    "decode batch 1 dynamic (tok/s)": 52.6,
    "decode batch 1 static + compile (tok/s)": 162.5,
    "decode batch 8 dynamic (tok/s)": 381,
    "decode batch 8 static + compile (tok/s)": 1196,
    "stage-2 step 8x1024 (s)": 0.96,
    "stage-2 MFU": 0.35,
    "stage-2 memory (GiB)": 52.6,
    "LoRA r128 step (s)": 1.64,
    "stage-1 step 32x601 (s)": 1.69,
}
GOALS = {
    "prefill (ms)": "<= 15",
    "decode batch 1 (tok/s)": ">= 270",
    "decode batch 8 (tok/s)": ">= 2000",
    "stage-2 MFU": ">= 55% at <= 45 GiB",
    "LoRA step (s)": "<= 0.6",
    "stage 1 (samples/s)": ">= 40",
}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(bench_inference.PRESETS), default="llava-1.5-7b")
    parser.add_argument("--output", default="gpu_7b.json", help="the combined JSON report")
    parser.add_argument("--quick", action="store_true", help="few steps, one round, stage 1 only, no static cache")
    args = parser.parse_args(argv)
    threads = ["--threads", "1"] if not torch.cuda.is_available() else []
    with tempfile.TemporaryDirectory() as scratch:
        inference_json = os.path.join(scratch, "inference.json")
        bench_inference.main(
            ["--preset", args.preset, "--output", inference_json, *threads, *(["--skip-static"] if args.quick else [])]
        )
        with open(inference_json) as handle:
            inference = json.load(handle)
    training_args = ["--preset", args.preset, *threads]
    if args.quick:
        training_args += ["--steps", "2", "--warmup", "1", "--repeats", "1", "--stages", "pretrain"]
    training = bench_training.main(training_args)
    report = {
        "machine": torch.cuda.get_device_name() if torch.cuda.is_available() else f"{platform.machine()} CPU",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "command": "python benchmarks/run_gpu_7b.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset,
        "inference": inference,
        "training": training,
        "anchors_builtin_h200": ANCHORS_H200,
        "goals": GOALS,
    }
    output = Path(args.output)
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text(json.dumps(report, indent=1))
    os.replace(partial, output)  # never a half-written report
    print(f"wrote {output}")
    return report


if __name__ == "__main__":
    main()
