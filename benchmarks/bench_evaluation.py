# python benchmarks/bench_evaluation.py --preset tiny
"""Batched evaluation generation vs a one-at-a-time loop, on the same model and the same questions.

What is timed: `llava_hf.evaluation.generation.generate_answers` (processor + left-padded greedy `generate` + decode) over
`--examples` ScienceQA-style multiple-choice prompts (about two thirds with a synthetic image), at batch size 1 (the
original LLaVA eval scripts' loop) and at `--batch-sizes`. The anchor is transformers' built-in
`LlavaForConditionalGeneration` with the same weights and the same prompts, timed the same way. Each setting runs
`--repeats` times after one warm-up pass; the median is reported. Answers of every setting are compared with the
one-at-a-time answers of our model (greedy decoding must not depend on batching).

Presets: `tiny` = the test suite's model (CLIP 32 px / patch 8 -> 16 image tokens, 2-layer Llama, hidden 32, 512-token
tokenizer; `llava_hf.testing`), CPU. Results are appended to benchmarks/RESULTS_evaluation.md with `--write`.
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import LlavaConfig as BuiltinLlavaConfig
from transformers import LlavaForConditionalGeneration as BuiltinLlava
from transformers import LlavaProcessor as BuiltinLlavaProcessor

from llava_hf.evaluation import Task, scienceqa
from llava_hf.evaluation.generation import generate_answers, render_prompts
from llava_hf.processing import get_chat_template
from llava_hf.testing import make_tiny_config, make_tiny_model, make_tiny_processor

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS_evaluation.md"


def tiny_model_and_processors():
    config = make_tiny_config()
    ours = make_tiny_model(config)
    processor = make_tiny_processor(chat_template="vicuna_v1")
    tokenizer, image_processor = processor.tokenizer, processor.image_processor
    vision, text = config.vision_config, config.text_config
    builtin = BuiltinLlava(
        BuiltinLlavaConfig(
            vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=tokenizer.image_token_id
        )
    ).eval()
    builtin.load_state_dict(ours.state_dict(), strict=True)
    builtin_processor = BuiltinLlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    )
    return ours, processor, builtin, builtin_processor


def synthetic_questions(count: int):
    rng = np.random.default_rng(0)
    words = "red blue green circle square triangle left right above below large small".split()
    examples = []
    for index in range(count):
        question = "Which " + " ".join(rng.choice(words, size=int(rng.integers(3, 15)))) + "?"
        choices = [" ".join(rng.choice(words, size=2)) for _ in range(int(rng.integers(2, 5)))]
        pixels = rng.integers(0, 256, size=(int(rng.integers(24, 64)), int(rng.integers(24, 64)), 3), dtype=np.uint8)
        image = Image.fromarray(pixels) if index % 3 else None
        problem = {
            "question": question,
            "choices": choices,
            "answer": 0,
            "hint": "" if index % 2 else "A hint.",
            "image": image,
            "subject": "natural science",
            "grade": "grade3",
        }
        examples.append(scienceqa.make_example(str(index), problem))
    return Task(name="bench", examples=examples, score=scienceqa.score)


def run(model, processor, task, batch_size, max_new_tokens):
    """All answers at one batch size (longest prompt first, as generate_predictions batches them)."""
    prompts = render_prompts(task, processor, task.examples)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    answers = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        texts = generate_answers(
            model, processor, [prompts[i] for i in chosen], [task.examples[i].images for i in chosen], max_new_tokens
        )
        for i, text in zip(chosen, texts):
            answers[i] = text
    return answers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny"], default="tiny")
    parser.add_argument("--examples", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--write", action="store_true", help="append the figures to benchmarks/RESULTS_evaluation.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    ours, processor, builtin, builtin_processor = tiny_model_and_processors()
    task = synthetic_questions(args.examples)
    reference = run(ours, processor, task, 1, args.max_new_tokens)

    settings = [
        (name, model, proc, batch_size)
        for name, model, proc in (
            ("llava_hf", ours, processor),
            ("built-in Llava (anchor)", builtin, builtin_processor),
        )
        for batch_size in [1] + args.batch_sizes
    ]
    for _, model, proc, batch_size in settings:
        run(model, proc, task, batch_size, args.max_new_tokens)  # warm-up
    # Settings take turns within each repeat, so load from other processes on a shared machine hits all of them alike.
    times = {index: [] for index in range(len(settings))}
    answers = {}
    load_before = os.getloadavg()[0]
    for _ in range(args.repeats):
        for index, (_, model, proc, batch_size) in enumerate(settings):
            start = time.perf_counter()
            answers[index] = run(model, proc, task, batch_size, args.max_new_tokens)
            times[index].append(time.perf_counter() - start)
    load_after = os.getloadavg()[0]
    rows = []
    for index, (name, _, _, batch_size) in enumerate(settings):
        same = sum(a == b for a, b in zip(answers[index], reference))
        rows.append((name, batch_size, args.examples / statistics.median(times[index]), same))
    base = {name: speed for name, batch_size, speed, _ in rows if batch_size == 1}
    anchor_batch = {bs: speed for name, bs, speed, _ in rows if name.startswith("built-in")}
    lines = [
        "| model | batch size | examples/s | vs its batch 1 | vs built-in at same batch | answers equal to batch 1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, batch_size, speed, same in rows:
        lines.append(
            f"| {name} | {batch_size} | {speed:.1f} | {speed / base[name]:.2f}x | "
            f"{speed / anchor_batch[batch_size]:.2f}x | {same}/{args.examples} |"
        )
    table = "\n".join(lines)
    command = "python benchmarks/bench_evaluation.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    machine = (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores visible, torch threads "
        f"{args.threads}, no GPU, torch {torch.__version__}; 1-min load average {load_before:.1f} before, "
        f"{load_after:.1f} after (other jobs share the machine)"
    )
    report = (
        f"## Batched evaluation generation ({args.preset} preset, {args.examples} examples, "
        f"{args.max_new_tokens} new tokens, median of {args.repeats})\n\nCommand: `{command.strip()}`\n\n"
        f"Machine: {machine}\n\n{table}\n"
    )
    print(report)
    if args.write:
        previous = RESULTS.read_text() if RESULTS.exists() else "# Evaluation benchmarks\n\n"
        temporary = RESULTS.with_suffix(".tmp")
        temporary.write_text(previous.rstrip("\n") + "\n\n" + report)
        os.replace(temporary, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
