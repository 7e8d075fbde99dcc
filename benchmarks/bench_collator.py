# python benchmarks/bench_collator.py [--rounds 5] [--batch_size 8] [--json out.json]
"""Collation throughput on one CPU thread: our LlavaCollator vs TRL's default vision collator, on the same rows.

The rows: `make_shape_rows(160, lengths="realistic")` (short VQA, long descriptions, multi-turn and text-only
conversations, as in the v1.5 mix) with every image replaced by a decoded 640x480 photo-like JPEG (the images a
LLaVA-1.5 data worker sees), CLIP-L/336 settings (576 image tokens, "pad"), the `vicuna_v1` template, the test
tokenizer (a real BPE tokenizer shaped like Llama's: no pad token, `<image>` added as a special token).

- `ours padded` / `ours padding-free`: `llava_hf.data.LlavaCollator` (tokenize, mask all but the answers, expand
  `<image>`, preprocess the images with LlavaHfImageProcessor);
- `trl`: `trl.trainer.sft_trainer.DataCollatorForVisionLanguageModeling` as `SFTTrainer` builds it for a processor,
  with `assistant_only_loss=True` (so it supervises the same tokens), over transformers' built-in `LlavaProcessor`
  with the built-in `LlavaImageProcessorPil` (the same settings) and the same chat template.

Also reported: ours with the images left out of the rows (tokenization + masking alone) and TRL the same way, which
splits the cost between text and images. Rounds interleave the collators; figures are samples/s min / median / max,
ratios are ours / TRL within a round, median over rounds.
"""

import argparse
import copy
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
import trl
from PIL import Image
from transformers import LlavaImageProcessorPil
from transformers import LlavaProcessor as BuiltinLlavaProcessor
from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

from llava_hf import LlavaHfProcessor, build_image_processor
from llava_hf.data import LlavaCollator, to_conversation
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.processing import get_chat_template
from llava_hf.testing import load_tiny_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_preprocessing import photo_like_jpeg  # noqa: E402

IMAGE_SIZE, PATCH_SIZE = 336, 14


def build_rows(count: int, with_images: bool) -> list[dict]:
    photos = [Image.open(io.BytesIO(photo_like_jpeg(seed=seed))).convert("RGB") for seed in range(4)]
    rows = make_shape_rows(count, seed=0, image_size=32, lengths="realistic")
    for index, row in enumerate(rows):
        if with_images:
            row["images"] = [photos[(index + offset) % len(photos)] for offset in range(len(row["images"]))]
        else:  # the same conversation without its image parts
            row["images"] = []
            for message in row["messages"]:
                message["content"] = [part for part in message["content"] if part["type"] != "image"]
    return rows


def collators(tokenizer) -> dict:
    image_processor = build_image_processor(IMAGE_SIZE, "pad")
    processor = LlavaHfProcessor(image_processor, tokenizer, image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2)
    settings = {key: value for key, value in image_processor.to_dict().items() if key != "image_processor_type"}
    builtin = BuiltinLlavaProcessor(
        image_processor=LlavaImageProcessorPil(**settings),
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template("vicuna_v1"),
    )
    trl_collator = DataCollatorForVisionLanguageModeling(
        processor=builtin, max_length=None, assistant_only_loss=True, chat_template=builtin.chat_template
    )

    def trl_call(rows):  # TRL's rows: messages + images; its collator edits them in place, so give it copies
        return trl_collator([{"messages": to_conversation(row), "images": list(row["images"])} for row in rows])

    return {
        "ours padded": LlavaCollator(processor),
        "ours padding-free": LlavaCollator(processor, padding_free=True),
        "trl": trl_call,
    }


def samples_per_second(collate, rows: list[dict], batch_size: int) -> float:
    batches = [copy.copy(rows[start : start + batch_size]) for start in range(0, len(rows), batch_size)]
    start = time.perf_counter()
    for batch in batches:
        collate(batch)
    return len(rows) / (time.perf_counter() - start)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    tokenizer = load_tiny_tokenizer()
    candidates = collators(tokenizer)
    inputs = {"with images": build_rows(args.rows, True), "text only": build_rows(args.rows, False)}
    # Both supervise the same tokens: the same number of labelled positions on the first batch (TRL's rows carry no
    # BOS, see RESULTS_training.md, which is never supervised either).
    first = inputs["with images"][: args.batch_size]
    supervised = {name: int((candidates[name](first)["labels"] != -100).sum()) for name in ("ours padded", "trl")}
    assert supervised["ours padded"] == supervised["trl"], supervised
    rates = {(name, kind): [] for kind in inputs for name in candidates}
    for name, kind in rates:  # warm-up
        samples_per_second(candidates[name], inputs[kind][: args.batch_size], args.batch_size)
    for _ in range(args.rounds):
        for name, kind in rates:
            rates[(name, kind)].append(samples_per_second(candidates[name], inputs[kind], args.batch_size))
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end",
        "versions": f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}",
        "command": "python benchmarks/bench_collator.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "supervised_tokens_first_batch": supervised,
        "rows": [],
    }
    print(f"{report['machine']}; {report['versions']}; 1 thread; {args.rounds} rounds of {args.rows} rows")
    print(f"{'collator':<20} {'rows':<12} {'samples/s min':>14} {'median':>8} {'max':>8}   vs trl (median of rounds)")
    for (name, kind), values in rates.items():
        ratios = [ours / anchor for ours, anchor in zip(values, rates[("trl", kind)])]
        row = {
            "collator": name,
            "rows": kind,
            "samples_per_s": {"min": min(values), "median": statistics.median(values), "max": max(values)},
            "vs_trl": statistics.median(ratios),
        }
        report["rows"].append(row)
        stats = row["samples_per_s"]
        print(
            f"{name:<20} {kind:<12} {stats['min']:>14.1f} {stats['median']:>8.1f} {stats['max']:>8.1f}   "
            f"{row['vs_trl']:.2f}x"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
