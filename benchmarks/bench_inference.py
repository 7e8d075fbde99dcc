"""Inference speed of llava_hf vs transformers' built-in Llava on the same random weights, in the same run.

    python benchmarks/bench_inference.py --preset tiny --threads 1  # CPU, a minute
    python benchmarks/bench_inference.py --preset llava-1.5-7b      # one GPU, bf16 (CLIP-L/336 + Vicuna-7B shape)

Measures prefill latency (1 image + 40 text tokens), end-to-end and decode-only tokens/s at batch 1 and 8 with the
dynamic cache, batch 1 with the static cache (compiled automatically by generate on GPU), and peak GPU memory.
Each measurement alternates the two models so drift on a shared machine hits both; ratios are ours / built-in
(>1 means llava_hf is faster). Prints a markdown table and writes JSON to --output.
"""

import argparse
import json
import platform
import time

import torch
import transformers
from transformers import CLIPVisionConfig, LlamaConfig
from transformers import LlavaConfig as BuiltinLlavaConfig
from transformers import LlavaForConditionalGeneration as BuiltinLlava

from llava_hf import LlavaHfConfig, LlavaHfForConditionalGeneration

PRESETS = {
    "tiny": dict(
        vision=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=336, patch_size=14),
        text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4, vocab_size=32064),
        new_tokens=32,
    ),
    "llava-1.5-7b": dict(
        vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
                    patch_size=14, projection_dim=768, hidden_act="quick_gelu"),
        text=dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                  vocab_size=32064, max_position_embeddings=4096, rms_norm_eps=1e-5),
        new_tokens=128,
    ),
}
IMAGE_TOKEN_ID = 32000


def build_models(preset: dict, device: str, dtype: torch.dtype):
    """Our model with random weights and the built-in model sharing the very same tensors (no extra memory)."""
    vision, text = CLIPVisionConfig(**preset["vision"]), LlamaConfig(**preset["text"])
    torch.manual_seed(0)
    with torch.device(device):
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        ours = LlavaHfForConditionalGeneration(LlavaHfConfig(vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID))
        torch.set_default_dtype(default_dtype)
    builtin_config = BuiltinLlavaConfig(vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=IMAGE_TOKEN_ID)
    with torch.device("meta"):
        builtin = BuiltinLlava(builtin_config)
    builtin.load_state_dict(ours.state_dict(), assign=True, strict=True)
    for name, buffer in ours.named_buffers():  # non-persistent buffers (rotary inv_freq, ...) are not in state_dict
        module_name, _, buffer_name = name.rpartition(".")
        builtin.get_submodule(module_name)._buffers[buffer_name] = buffer
    return ours.eval(), builtin.eval()


def make_inputs(batch_size: int, text_tokens: int, image_tokens: int, image_size: int, device: str, dtype: torch.dtype):
    input_ids = torch.randint(100, 31000, (batch_size, 1 + image_tokens + text_tokens), device=device)
    input_ids[:, 0] = 1
    input_ids[:, 1 : 1 + image_tokens] = IMAGE_TOKEN_ID
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, device=device, dtype=dtype)
    return dict(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), pixel_values=pixel_values)


def synchronize(device: str):
    if device == "cuda":
        torch.cuda.synchronize()


def seconds_per_call(function, device: str, warmup: int, iterations: int) -> float:
    for _ in range(warmup):
        function()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        function()
    synchronize(device)
    return (time.perf_counter() - start) / iterations


def paired(models: dict, measure, rounds: int = 3) -> dict:
    """Run `measure(model)` alternately on both models, `rounds` times each, keeping the best (least disturbed) figure."""
    results = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            results[name].append(measure(model))
    return {name: min(values) for name, values in results.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--output", default="bench_inference.json")
    parser.add_argument("--skip-static", action="store_true", help="skip the static-cache measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadiest on a shared machine)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    preset = PRESETS[args.preset]
    ours, builtin = build_models(preset, device, dtype)
    models = {"llava_hf": ours, "builtin": builtin}
    image_size = preset["vision"]["image_size"]
    image_tokens = (image_size // preset["vision"]["patch_size"]) ** 2
    new_tokens = preset["new_tokens"]
    generate_kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0)
    one_token = dict(generate_kwargs, max_new_tokens=1, min_new_tokens=1)

    rows = {}
    with torch.no_grad():
        batch1 = make_inputs(1, 40, image_tokens, image_size, device, dtype)
        batch8 = make_inputs(8, 40, image_tokens, image_size, device, dtype)
        rows["prefill 1 image + 40 tokens (ms, lower is better)"] = {
            name: 1000 * value
            for name, value in paired(models, lambda m: seconds_per_call(lambda: m(**batch1, use_cache=True), device, 2, 5)).items()
        }
        for label, inputs, batch_size, extra in [
            ("decode batch 1, dynamic cache (tok/s)", batch1, 1, {}),
            ("decode batch 8, dynamic cache (tok/s)", batch8, 8, {}),
            ("decode batch 1, static cache (tok/s)", batch1, 1, {"cache_implementation": "static"}),
        ]:
            if extra and args.skip_static:
                continue

            for model in models.values():  # first calls pay one-off costs (allocations, static cache, compilation)
                model.generate(**inputs, **generate_kwargs, **extra)

            def decode_rate(model, inputs=inputs, batch_size=batch_size, extra=extra):
                prefill_only = seconds_per_call(lambda: model.generate(**inputs, **one_token, **extra), device, 1, 2)
                full = seconds_per_call(lambda: model.generate(**inputs, **generate_kwargs, **extra), device, 1, 2)
                return batch_size * (new_tokens - 1) / max(full - prefill_only, 1e-9)

            rows[label] = paired(models, decode_rate)
    if device == "cuda":
        rows["peak GPU memory (GiB, both models share weights)"] = {name: torch.cuda.max_memory_allocated() / 2**30 for name in models}

    machine = torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"
    print(f"\nmachine: {machine}; torch {torch.__version__}; transformers {transformers.__version__}; preset {args.preset}; {dtype}\n")
    print("| measurement | llava_hf | built-in | ratio |\n|---|---|---|---|")
    for label, values in rows.items():
        lower_is_better = "lower is better" in label or "memory" in label
        ratio = values["builtin"] / values["llava_hf"] if lower_is_better else values["llava_hf"] / values["builtin"]
        print(f"| {label} | {values['llava_hf']:.2f} | {values['builtin']:.2f} | {ratio:.2f} |")
    with open(args.output, "w") as handle:
        json.dump({"machine": machine, "preset": args.preset, "dtype": str(dtype), "rows": rows}, handle, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
