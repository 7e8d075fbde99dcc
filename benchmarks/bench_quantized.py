# flock /work/locks/bigmem python benchmarks/bench_quantized.py --source /work/standins/llava-1.5-7b-hf --workdir /work/standins --output quantized.json
# python benchmarks/bench_quantized.py --source tiny --workdir /tmp/bench_quantized   # tiny model, a minute
# flock /work/locks/bigmem python benchmarks/bench_quantized.py --source /work/standins/llava-1.5-13b-hf --workdir /work/standins --rows "llava_hf:4-bit stored" --output quantized_13b.json
"""One image question on CPU with a LLaVA checkpoint in bf16, 4-bit NF4 and 8-bit LLM.int8: llava_hf's model vs
transformers' built-in Llava on the same files, each configuration in its own process (clean peak RSS). llava_hf
loads through `load_checkpoint` (what `llava-hf generate/chat/serve/evaluate` do), the built-in through stock
`LlavaForConditionalGeneration.from_pretrained`.

Rows:
- bf16: the source checkpoint loaded in bfloat16.
- 4-bit / 8-bit stored: the checkpoint written by `llava-hf quantize` (made in --workdir, `<name>-4bit` /
  `<name>-8bit`, if missing; that run's own peak RSS and time are reported too).
- 4-bit at load: the source quantized by transformers while loading (`--load_in_4bit`), the path that holds the
  16-bit weights in memory.
llava_hf's rows load as the `llava-hf` commands do: on CPU its 4-bit layers are repacked for bitsandbytes' kernel
while loading, releasing the checkpoint's file pages (transformers' rows repack on their first forward, keeping them).
Per row: peak RSS of the process, load time, prefill (time to the first token), decode tokens/s over the following
tokens, and how many of the first 8 greedy tokens agree with the same implementation's bf16 tokens. Random weights
(stand-ins) make greedy tokens fragile: a flat next-token distribution flips under small quantization noise.
Prints a markdown table and writes JSON to --output.
"""

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

NEW_TOKENS = 8
QUESTION = "What is shown in this image? Describe it."
ROWS = [  # (implementation, precision)
    ("llava_hf", "bf16"),
    ("transformers", "bf16"),
    ("llava_hf", "4-bit stored"),
    ("transformers", "4-bit stored"),
    ("llava_hf", "8-bit stored"),
    ("transformers", "8-bit stored"),
    ("llava_hf", "4-bit at load"),
]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def builtin_config_for(folder: Path):
    """transformers' LlavaConfig for `folder` (which may hold a llava_hf config)."""
    from transformers import AutoConfig

    from llava_hf import LlavaHfConfig
    from llava_hf.testing import builtin_llava_config

    config = AutoConfig.from_pretrained(folder)
    if not isinstance(config, LlavaHfConfig):
        return config
    builtin = builtin_llava_config(config)
    builtin.dtype = config.dtype
    return builtin


def load(implementation: str, precision: str, folder: Path):
    """llava_hf: `load_checkpoint`, the loader of every llava-hf command (a cast load never holds two copies);
    transformers: stock `LlavaForConditionalGeneration.from_pretrained`."""
    import torch
    from transformers import LlavaForConditionalGeneration

    from llava_hf.utils.loading import bitsandbytes_config, load_checkpoint

    quantization = bitsandbytes_config(4) if precision == "4-bit at load" else None
    if implementation == "llava_hf":
        dtype = "bfloat16" if precision == "bf16" else "auto"  # auto: bfloat16 at load, stored ones as saved
        return load_checkpoint(str(folder), dtype=dtype, device="cpu", quantization=quantization)[0]
    kwargs = dict(config=builtin_config_for(folder), dtype=torch.bfloat16)
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": "cpu"})
    elif precision != "bf16":
        kwargs["dtype"] = "auto"  # stored quantized: the unquantized rest as saved (bfloat16)
    return LlavaForConditionalGeneration.from_pretrained(folder, **kwargs).eval()


def measure(spec: dict) -> dict:
    """One configuration, in this process: load, then one greedy answer of NEW_TOKENS tokens, timed per token."""
    import torch
    from transformers import AutoProcessor, LogitsProcessor, LogitsProcessorList

    from llava_hf.testing import make_image

    torch.set_num_threads(spec["threads"])
    folder = Path(spec["folder"])
    start = time.perf_counter()
    model = load(spec["implementation"], spec["precision"], folder)
    load_s = time.perf_counter() - start
    rss_after_load = peak_rss_gib()
    processor = AutoProcessor.from_pretrained(spec["processor"])  # the same inputs for every row
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=make_image(0, size=(640, 480)), text=prompt, return_tensors="pt")
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)

    stamps = []

    class Clock(LogitsProcessor):  # called once per generated token, right after that step's forward
        def __call__(self, input_ids, scores):
            stamps.append(time.perf_counter())
            return scores

    start = time.perf_counter()
    with torch.no_grad():
        output = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            do_sample=False,
            logits_processor=LogitsProcessorList([Clock()]),
        )
    tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    return {
        **spec,
        "load_s": load_s,
        "rss_after_load_gib": rss_after_load,
        "peak_rss_gib": peak_rss_gib(),
        "prefill_s": stamps[0] - start,
        "decode_tok_s": (len(stamps) - 1) / (stamps[-1] - stamps[0]),
        "prompt_tokens": int(inputs["input_ids"].shape[1]),
        "tokens": tokens,
    }


def quantize(spec: dict) -> dict:
    """`llava-hf quantize` in this process, for its peak RSS and time."""
    from llava_hf.conversion.quantize import quantize_checkpoint

    start = time.perf_counter()
    result = quantize_checkpoint(spec["source"], spec["destination"], spec["bits"])
    return {
        **spec,
        "seconds": time.perf_counter() - start,
        "peak_rss_gib": peak_rss_gib(),
        "source_gib": result.source_bytes / 2**30,
        "destination_gib": result.destination_bytes / 2**30,
    }


def in_child(kind: str, spec: dict) -> dict:
    """Run `kind` (measure / quantize) for `spec` in a fresh Python process; returns its JSON result."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps(spec)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"{kind} {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def tiny_source(workdir: Path) -> Path:
    from llava_hf.testing import make_tiny_processor, make_tiny_quantizable_model

    folder = workdir / "tiny-llava"
    if not folder.exists():
        make_tiny_quantizable_model().save_pretrained(folder)
        make_tiny_processor(chat_template="vicuna_v1").save_pretrained(folder)
    return folder


def markdown(report: dict) -> str:
    lines = [
        "| implementation | precision | peak RSS (GiB) | RSS after load (GiB) | load (s) | prefill / first token (s) "
        "| decode (tok/s) | first 8 tokens = bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        agreement = "n/a" if row["agreement"] is None else f"{row['agreement']}/{NEW_TOKENS}"
        lines.append(
            f"| {row['implementation']} | {row['precision']} | {row['peak_rss_gib']:.2f} | "
            f"{row['rss_after_load_gib']:.2f} | {row['load_s']:.1f} | {row['prefill_s']:.2f} | "
            f"{row['decode_tok_s']:.2f} | {agreement} |"
        )
    for made in report["quantize"]:
        lines.append(
            f"\n`llava-hf quantize --bits {made['bits']}`: {made['source_gib']:.2f} GiB -> {made['destination_gib']:.2f} "
            f"GiB in {made['seconds']:.0f} s, peak RSS {made['peak_rss_gib']:.2f} GiB"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", help="unquantized checkpoint folder, or `tiny` (required)")
    parser.add_argument("--workdir", help="where the quantized copies are, made if missing (required)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--rows", help="comma-separated implementation:precision rows to run (default: all; a 13B's bf16 needs 26 GB)"
    )
    parser.add_argument("--output", default="quantized.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        kind, spec = arguments.child
        print(json.dumps((measure if kind == "measure" else quantize)(json.loads(spec))))
        return
    if not (arguments.source and arguments.workdir):
        parser.error("--source and --workdir are required")

    import torch
    import transformers

    workdir = Path(arguments.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = tiny_source(workdir) if arguments.source == "tiny" else Path(arguments.source)
    report = {
        "source": str(source),
        "machine": f"{platform.machine()}, {arguments.threads} torch threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "quantize": [],
        "rows": [],
    }
    rows = ROWS
    if arguments.rows:
        rows = [tuple(row.split(":", 1)) for row in arguments.rows.split(",")]
        unknown = set(rows) - set(ROWS)
        if unknown:
            parser.error(f"unknown rows {sorted(unknown)}; choose from {[':'.join(row) for row in ROWS]}")
    folders = {"bf16": source, "4-bit at load": source}
    for bits in (4, 8):
        folder = workdir / f"{source.name}-{bits}bit"
        if not folder.exists() and any(precision == f"{bits}-bit stored" for _, precision in rows):
            spec = {"source": str(source), "destination": str(folder), "bits": bits}
            report["quantize"].append(in_child("quantize", spec))
        folders[f"{bits}-bit stored"] = folder
    bf16_tokens = {}
    for implementation, precision in rows:
        spec = {"implementation": implementation, "precision": precision, "folder": str(folders[precision])}
        # the source's processor (the same inputs for every row); a stored copy's own where the source is gone
        processor = source if source.exists() else folders[precision]
        spec.update(processor=str(processor), threads=arguments.threads)
        row = in_child("measure", spec)
        if precision == "bf16":
            bf16_tokens[implementation] = row["tokens"]
        report["rows"].append(row)
        print(f"{implementation} {precision}: {json.dumps(row)}", flush=True)
    for row in report["rows"]:  # after all rows: --rows may list a bf16 row after the rows compared with it
        reference = bf16_tokens.get(row["implementation"])
        row["agreement"] = (
            None if reference is None else sum(1 for a, b in zip(row["tokens"], reference, strict=True) if a == b)
        )
    Path(arguments.output).write_text(json.dumps(report, indent=2))
    print(markdown(report))


if __name__ == "__main__":
    main()
