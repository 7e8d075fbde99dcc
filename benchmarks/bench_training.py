# python benchmarks/bench_training.py --preset tiny [--repeats 3] [--threads 1] [--write] [--padding_only] [--json out.json]
"""Training throughput of our stage recipes vs plain TRL on transformers' built-in Llava, same weights, same data.

Ours: `llava_hf.training.build_trainer` (LlavaSFTTrainer + LlavaCollator, padded and padding-free).
Anchor: `trl.SFTTrainer` on transformers' `LlavaForConditionalGeneration` holding exactly our weights, with TRL's
default vision collator (`assistant_only_loss=True`, so both supervise the same tokens) and the built-in
`LlavaProcessor` (built-in `LlavaImageProcessorPil`, same settings) given the same chat template; the same parameters
are frozen (LoRA: TRL's `peft_config`).

Every configuration runs `--repeats` times (rounds interleave the configurations, so load changes hit all of them);
the table gives tokens/s min / median / max over the rounds, and each ratio is computed within a round (ours / anchor
of the same stage in the same round), then the median of those is reported.

For each stage (pretrain = projector only with the `plain` template, finetune = projector + LLM, lora) it reports
samples/s, tokens/s (real tokens, image tokens included), the padding fraction of the batches, peak memory (GPU:
`max_memory_allocated`; CPU: peak RSS growth during the run) and the first-step loss (equal losses show both
supervise the same tokens), over `--steps` timed steps after `--warmup` steps. On GPU it also reports MFU
(6 x trainable-path parameters x tokens/s is not exact for frozen towers, so the estimate uses 2N forward + 4N backward
over the language model for finetune/LoRA and 2N + 2N for pretrain).

`--padding_only` skips the timed runs and prints only the padding fraction of random batches (Trainer's default order)
vs `group_by_modality_length` batches, on the real encoded lengths of the same rows (no model is built).

Data: `make_shape_rows(..., lengths="realistic")`: short VQA, long descriptions, multi-turn and text-only rows mixed
(their lengths vary ~10x, as in the v1.5 mix). Presets: `tiny` (the test suite's model, CPU) and `llava-1.5-7b`
(CLIP-L/336 + a 7B Llama with random weights, bf16, one GPU; no download needed).
"""

import argparse
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import CLIPVisionConfig, LlamaConfig, LlavaImageProcessorPil, TrainerCallback
from transformers import LlavaForConditionalGeneration as BuiltinLlava
from transformers import LlavaProcessor as BuiltinLlavaProcessor
from transformers.trainer_callback import PrinterCallback
from trl import SFTConfig, SFTTrainer

from llava_hf import LlavaHfConfig, LlavaHfForConditionalGeneration, LlavaHfProcessor, build_image_processor
from llava_hf.data import ROW_FEATURES, LlavaCollator, padding_fraction, to_conversation
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.processing import get_chat_template
from llava_hf.testing import TINY_TEXT, TINY_VISION, builtin_llava_config, load_tiny_tokenizer
from llava_hf.training import (
    LORA_TARGET_MODULES,
    STAGES,
    LlavaRunArguments,
    ModalityLengthGroupedSampler,
    build_trainer,
    estimate_lengths,
    lora_config,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS_training.md"
PRESETS = {
    "tiny": dict(
        vision=TINY_VISION,
        text=TINY_TEXT,
        image_size=TINY_VISION["image_size"],
        patch_size=TINY_VISION["patch_size"],
        batch_size=8,
        rows=160,
        lora_r=8,
        dtype=torch.float32,
    ),
    "llava-1.5-7b": dict(
        vision=dict(
            hidden_size=1024,
            intermediate_size=4096,
            num_hidden_layers=24,
            num_attention_heads=16,
            image_size=336,
            patch_size=14,
        ),
        text=dict(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=32,
        ),
        image_size=336,
        patch_size=14,
        batch_size=8,
        rows=160,
        lora_r=128,
        dtype=torch.bfloat16,
    ),
}
H100_BF16_FLOPS = 989e12


def build_models(preset: dict, device: str):
    tokenizer = load_tiny_tokenizer()
    vision_config = CLIPVisionConfig(**preset["vision"], projection_dim=32)
    text_config = LlamaConfig(
        **preset["text"],
        vocab_size=len(tokenizer),
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    config = LlavaHfConfig(
        vision_config=vision_config, text_config=text_config, image_token_index=tokenizer.image_token_id
    )
    ours = LlavaHfForConditionalGeneration(config).to(device, preset["dtype"])
    builtin = BuiltinLlava(builtin_llava_config(config)).to(device, preset["dtype"])
    builtin.load_state_dict(ours.state_dict(), strict=True)
    image_processor = build_image_processor(preset["image_size"], "pad")
    processor = LlavaHfProcessor(image_processor, tokenizer, image_seq_length=config.image_seq_length)
    return ours, processor, builtin, image_processor, tokenizer


def builtin_processor(image_processor, tokenizer, template: str, patch_size: int):
    settings = {key: value for key, value in image_processor.to_dict().items() if key != "image_processor_type"}
    return BuiltinLlavaProcessor(
        image_processor=LlavaImageProcessorPil(**settings),  # what plain transformers users get without torchvision
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=get_chat_template(template),
    )


class Meter(TrainerCallback):
    """Wall time of each optimizer step, and the real/padded token counts of each batch the collator produced."""

    def __init__(self, collator):
        self.collator, self.step_ends, self.real, self.total, self.samples = collator, [], [], [], []
        self.cpu_ends = []  # process CPU time: on a machine shared with other jobs it moves far less than wall time

    def __call__(self, rows):
        batch = self.collator(rows)
        real = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
        self.real.append(real)
        self.total.append(batch["input_ids"].numel())
        self.samples.append(len(rows))
        return batch

    def on_step_begin(self, args, state, control, **kwargs):
        if not self.step_ends:
            self.step_ends.append(time.perf_counter())
            self.cpu_ends.append(time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.step_ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())


class PeakRss:
    """Peak resident memory growth of this process while the block runs (CPU runs; polled every 5 ms)."""

    def __enter__(self):
        self.start = self.peak = self.rss()
        self.running = True
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    def poll(self):
        while self.running:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.005)

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def sft_config(output_dir: str, steps: int, preset: dict, device: str, **extra) -> SFTConfig:
    return SFTConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=preset["batch_size"],
        learning_rate=1e-4,
        use_cpu=device == "cpu",
        bf16=preset["dtype"] == torch.bfloat16,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=device != "cpu",
        max_length=4096,
        disable_tqdm=True,
        seed=0,
        dataloader_drop_last=True,
        **extra,
    )


def run_one(implementation: str, stage: str, pack: bool, args, preset: dict, device: str, rows: list[dict]) -> dict:
    ours, processor, builtin, image_processor, tokenizer = build_models(preset, device)
    steps = args.warmup + args.steps
    output_dir = f"/tmp/bench_training/{implementation}-{stage}-{pack}"
    template = STAGES[stage].chat_template or "vicuna_v1"
    if implementation == "ours":
        run = LlavaRunArguments(
            stage=stage, pack_batches=pack, lora_r=preset["lora_r"], lora_alpha=2 * preset["lora_r"]
        )
        trainer = build_trainer(run, sft_config(output_dir, steps, preset, device), ours, processor, rows)
    else:
        builtin.model.vision_tower.requires_grad_(False)
        if not STAGES[stage].train_language_model:
            builtin.model.language_model.requires_grad_(False)
            builtin.lm_head.requires_grad_(False)
        trl_rows = Dataset.from_list([{"messages": to_conversation(row), "images": row["images"]} for row in rows])
        peft = (
            lora_config(preset["lora_r"], 2 * preset["lora_r"], 0.05, LORA_TARGET_MODULES) if stage == "lora" else None
        )
        trainer = SFTTrainer(
            model=builtin,
            args=sft_config(output_dir, steps, preset, device, assistant_only_loss=True),
            train_dataset=trl_rows,
            processing_class=builtin_processor(image_processor, tokenizer, template, preset["patch_size"]),
            peft_config=peft,
        )
    trainer.remove_callback(PrinterCallback)  # the per-step log dicts would bury the results
    meter = Meter(trainer.data_collator)
    trainer.data_collator = meter
    trainer.add_callback(meter)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as rss:
        trainer.train()
    first_loss = next(entry["loss"] for entry in trainer.state.log_history if "loss" in entry)
    timed = slice(args.warmup, steps)
    seconds = meter.step_ends[steps] - meter.step_ends[args.warmup]
    cpu_seconds = meter.cpu_ends[steps] - meter.cpu_ends[args.warmup]
    samples, real, total = sum(meter.samples[timed]), sum(meter.real[timed]), sum(meter.total[timed])
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else rss.peak - rss.start
    result = {
        "implementation": implementation,
        "stage": stage,
        "batches": "padding-free" if pack else "padded",
        "samples/s": samples / seconds,
        "tokens/s": real / seconds,
        "tokens/cpu-s": real / cpu_seconds,
        "padding": 1 - real / total,
        "peak_memory_gb": peak / 1e9,
        "first_loss": first_loss,
    }
    if device == "cuda":
        language_params = sum(p.numel() for p in ours.model.language_model.parameters())
        flops_per_token = (4 if stage == "pretrain" else 6) * language_params
        result["mfu"] = flops_per_token * result["tokens/s"] / H100_BF16_FLOPS
    return result


def grouping_padding(preset: dict, rows: Dataset, num_orders: int = 10) -> str:
    """Padding at the preset's batch size, averaged over `num_orders` epochs: random order vs group_by_modality_length
    with a megabatch of 1 and of 8 batches (one device without accumulation; e.g. 8 devices, as LLaVA-1.5's 8 x 16).
    Measured on the real encoded lengths; the sampler sees only its estimates."""
    tokenizer = load_tiny_tokenizer()
    image_seq_length = (preset["image_size"] // preset["patch_size"]) ** 2
    processor = LlavaHfProcessor(
        build_image_processor(preset["image_size"], "pad"), tokenizer, image_seq_length=image_seq_length
    )
    collator = LlavaCollator(processor)
    real = [len(collator.encode(row).input_ids) for row in rows]
    lengths, has_image = estimate_lengths(rows, tokenizer, image_seq_length)
    batch_size = preset["batch_size"]

    def average(orders):
        return sum(padding_fraction([real[index] for index in order], batch_size) for order in orders) / len(orders)

    random_orders = [
        torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist() for seed in range(num_orders)
    ]
    figures = [f"random {average(random_orders):.1%}"]
    for batches_per_megabatch in (1, 8):
        sampler = ModalityLengthGroupedSampler(
            lengths, has_image, batch_size, batch_size * batches_per_megabatch, seed=0
        )
        orders = []
        for epoch in range(num_orders):
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        figures.append(f"grouped (megabatch {batch_size * batches_per_megabatch}) {average(orders):.1%}")
    return (
        f"group_by_modality_length padding at batch {batch_size} ({image_seq_length} tokens per image, "
        f"{sum(has_image)} image + {len(rows) - sum(has_image)} text-only rows, mean of {num_orders} epochs): "
        + ", ".join(figures)
    )


def summarise(results: list[dict]) -> list[dict]:
    """Per configuration: tokens/s min/median/max over the rounds, and the median of the per-round ratios."""
    anchors = {
        (result["round"], result["stage"]): result for result in results if result["implementation"] == "trl-builtin"
    }
    rows = {}
    for result in results:
        key = (result["stage"], result["implementation"], result["batches"])
        rows.setdefault(key, []).append(result)
    summary = []
    for (stage, implementation, batches), runs in rows.items():
        rates = [run["tokens/s"] for run in runs]
        ratios = [run["tokens/s"] / anchors[(run["round"], stage)]["tokens/s"] for run in runs]
        cpu_rates = [run["tokens/cpu-s"] for run in runs]
        cpu_ratios = [run["tokens/cpu-s"] / anchors[(run["round"], stage)]["tokens/cpu-s"] for run in runs]
        summary.append(
            {
                "stage": stage,
                "implementation": implementation,
                "batches": batches,
                "tokens/s": {"min": min(rates), "median": statistics.median(rates), "max": max(rates)},
                "samples/s median": statistics.median(run["samples/s"] for run in runs),
                "vs anchor": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)},
                "tokens/cpu-s": {"min": min(cpu_rates), "median": statistics.median(cpu_rates), "max": max(cpu_rates)},
                "vs anchor, cpu time": {
                    "min": min(cpu_ratios),
                    "median": statistics.median(cpu_ratios),
                    "max": max(cpu_ratios),
                },
                "padding": runs[0]["padding"],
                "peak_memory_gb max": max(run["peak_memory_gb"] for run in runs),
                "first_loss": runs[0]["first_loss"],
                **({"mfu median": statistics.median(run["mfu"] for run in runs)} if "mfu" in runs[0] else {}),
            }
        )
    return summary


def attention_cost(lengths_by_template: dict[str, list[int]], batch_size: int, num_orders: int = 10) -> str:
    """Attention scores per step without a varlen kernel: padded B x max(T)^2 vs packed (sum T)^2, random batches.

    SDPA and eager attention compute every score of the packed row, the block-diagonal mask only zeroes them; a
    varlen kernel (flash-attention) computes sum(T^2). On CPU the packed row therefore does more attention work than
    the padded batch whenever sum(T) > sqrt(B) x max(T), i.e. when the padding is below 1 - 1/sqrt(B) (65% at B=8).
    """
    figures = []
    for template, lengths in lengths_by_template.items():
        padded = packed = varlen = 0
        for seed in range(num_orders):
            order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(seed)).tolist()
            for start in range(0, len(order) - batch_size + 1, batch_size):
                batch = [lengths[index] for index in order[start : start + batch_size]]
                padded += batch_size * max(batch) ** 2
                packed += sum(batch) ** 2
                varlen += sum(length**2 for length in batch)
        figures.append(f"{template}: packed / padded {packed / padded:.2f}x, varlen / padded {varlen / padded:.2f}x")
    return f"attention scores per step at batch {batch_size} (mean of {num_orders} random epochs): " + "; ".join(
        figures
    )


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3, help="rounds over all configurations (min/median/max)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadiest on a shared machine)")
    parser.add_argument(
        "--stages", nargs="+", choices=["pretrain", "finetune", "lora"], default=["pretrain", "finetune", "lora"]
    )
    parser.add_argument(
        "--padding_only", action="store_true", help="only the padding of random vs group_by_modality_length batches"
    )
    parser.add_argument("--write", action="store_true", help=f"append the table to {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    device = "cuda" if torch.cuda.is_available() and args.preset != "tiny" else "cpu"
    rows = Dataset.from_list(
        make_shape_rows(preset["rows"], seed=0, image_size=preset["image_size"], lengths="realistic"),
        features=ROW_FEATURES,
    )
    grouping = grouping_padding(preset, rows)
    _, processor, *_ = build_models(preset, "cpu")
    lengths_by_template = {
        template: [len(LlavaCollator(processor, chat_template=template).encode(row).input_ids) for row in rows]
        for template in ("plain", "vicuna_v1")
    }
    attention = attention_cost(lengths_by_template, preset["batch_size"])
    print(attention)
    if args.padding_only:
        line = f"\n`--preset {args.preset} --padding_only`: {grouping}.\n{attention}.\n"
        print(line)
        if args.write:
            with RESULTS.open("a") as handle:
                handle.write(line)
        return {"grouping": grouping, "attention": attention}
    results = []
    for round_index in range(args.repeats):
        for stage in args.stages:
            for implementation, pack in (("trl-builtin", False), ("ours", False), ("ours", True)):
                result = run_one(implementation, stage, pack, args, preset, device, rows)
                result["round"] = round_index
                results.append(result)
                print(
                    {key: round(value, 4) if isinstance(value, float) else value for key, value in result.items()},
                    flush=True,
                )
    summary = summarise(results)
    # The padding a batch size of `batch_size` costs on this length distribution (batches in dataset order).
    lengths = lengths_by_template["vicuna_v1"]
    header = (
        "| stage | implementation | batches | tokens/s min / median / max | vs anchor (median of rounds; min-max) "
        "| tokens per CPU-s min / median / max | vs anchor, CPU time | samples/s | padding | peak mem (GB) "
        "| first loss |"
    )
    header += " MFU |" if device == "cuda" else ""
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for row in summary:
        rate, ratio = row["tokens/s"], row["vs anchor"]
        cpu_rate, cpu_ratio = row["tokens/cpu-s"], row["vs anchor, cpu time"]
        line = (
            f"| {row['stage']} | {row['implementation']} | {row['batches']} | "
            f"{rate['min']:.0f} / {rate['median']:.0f} / {rate['max']:.0f} | "
            f"{ratio['median']:.2f}x ({ratio['min']:.2f}-{ratio['max']:.2f}) | "
            f"{cpu_rate['min']:.0f} / {cpu_rate['median']:.0f} / {cpu_rate['max']:.0f} | "
            f"{cpu_ratio['median']:.2f}x ({cpu_ratio['min']:.2f}-{cpu_ratio['max']:.2f}) | {row['samples/s median']:.1f} | "
            f"{row['padding']:.1%} | {row['peak_memory_gb max']:.2f} | {row['first_loss']:.4f} |"
        )
        lines.append(line + (f" {row['mfu median']:.1%} |" if device == "cuda" else ""))
    machine = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"{platform.machine()} CPU, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
    )
    table = (
        f"\n### preset `{args.preset}` on {machine} (torch {torch.__version__}, {torch.get_num_threads()} thread(s)), "
        f"batch {preset['batch_size']}, {args.steps} timed steps after {args.warmup} warm-up steps, {args.repeats} rounds\n\n"
        f"Length distribution: {len(lengths)} samples, {min(lengths)}-{max(lengths)} tokens (mean "
        f"{sum(lengths) / len(lengths):.0f}); padding at batch {preset['batch_size']} in dataset order: "
        f"{padding_fraction(lengths, preset['batch_size']):.1%} of positions, 0% padding-free.\n{grouping}.\n{attention}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(table)
    if args.write:
        with RESULTS.open("a") as handle:
            handle.write(table)
    report = {
        "machine": machine,
        "preset": args.preset,
        "runs": results,
        "summary": summary,
        "grouping": grouping,
        "attention": attention,
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)
    return report


if __name__ == "__main__":
    main()
