"""Loading a checkpoint: the one dtype / device / quantization / chat-template policy of every command.

A checkpoint is a folder or a Hub repo id holding a model and its processor; ours and transformers' built-in llava
both load into llava_hf's own classes (`LlavaHfForConditionalGeneration`, `LlavaHfProcessor`: the Auto classes would
give transformers' built-in for a stock `llava` folder, without our exact preprocessing). The policy:

- device `auto`: cuda, then mps, then cpu.
- dtype `auto` (`choose_dtype`): the checkpoint's own dtype on an accelerator. On CPU: float32 when the weights are
  small (under SMALL_WEIGHTS_BYTES at float32, and a quarter of the available memory), else bfloat16 when the CPU
  computes it natively (AVX512-BF16 or AMX), else the checkpoint's own dtype (a 7B checkpoint is 27 GiB at float32:
  more than most machines have). The choice and its reason are printed in one line. `float32`, `bfloat16`,
  `float16` force one.
- memory (`check_memory`): before anything is loaded, the weights' size at the chosen dtype (from the safetensors
  headers) is compared with the available memory (MemAvailable, or the GPU's free memory); a model that cannot fit
  is a ValueError naming the options, not a kill by the OOM killer. LLAVA_HF_AVAILABLE_MEMORY (e.g. `20GiB`)
  replaces the measured figure: to plan for a smaller machine, or to test.
- quantization (`bits=4` or `8`, bitsandbytes, on a CUDA GPU or the CPU: bitsandbytes 0.50 runs both NF4 and
  LLM.int8 on CPU): the language model only. The vision tower, the projector and `lm_head` stay unquantized
  (`QUANTIZATION_SKIP_MODULES`): transformers' default skip list holds only lm_head, and quantizing the small
  projector costs accuracy for no memory; LLaVA's QLoRA recipe keeps them out too (`scripts/finetune_qlora.sh` +
  `llava/train/train.py` of the original repository, `bits=4`, nf4, double quant). A checkpoint saved already
  quantized (`llava-hf quantize`) loads as it is, with no `bits`. On CPU, dtype `auto` is bfloat16 for the
  unquantized rest of a model quantized while loading, and the saved dtype for one stored quantized
  (`quantized_cpu_dtype`).
- chat template: the processor's own unless `chat_template` overrides it (a name, a `.jinja` file, or Jinja source,
  see `llava_hf.processing.resolve_chat_template`); loading for inference refuses a checkpoint without one.
- inference (`for_inference=True`): eval mode, on the device, the tokenizer left-padded so batched generation
  continues every row from its own last prompt token. On CPU, a 4-bit model's layers are repacked for bitsandbytes'
  CPU kernel while loading, releasing the checkpoint's file pages as it goes (`repack_4bit_releasing_pages`): one
  copy of the 4-bit weights in memory, not the file's and the repacked one.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from .memory import (
    WeightsSize,
    available_memory,
    cast_parameters_releasing_pages,
    cpu_has_native_bf16,
    gib,
    read_weights_size,
    repack_4bit_releasing_pages,
)

# transformers 5 matches these against full module names from the start (or as a suffix), so the towers need their
# `model.` prefix: a bare "vision_tower" matches nothing and the tower would be quantized. The same names hold in
# our model, transformers' built-in Llava, and (lm_head) a language model loaded alone for QLoRA.
QUANTIZATION_SKIP_MODULES = ["model.vision_tower", "model.multi_modal_projector", "lm_head"]
DTYPE_NAMES = ("float32", "bfloat16", "float16")
# The --load_in_4bit / --load_in_8bit help of every command that loads a checkpoint. bitsandbytes quantizes while
# loading, so the 16-bit weights pass through memory; a `llava-hf quantize` checkpoint is stored quantized.
QUANTIZE_4BIT_HELP = (
    "Quantize the language model to 4-bit NF4 while loading (bitsandbytes; CUDA GPU or CPU). Not needed for a "
    "checkpoint written by `llava-hf quantize`, which is stored in 4-bit."
)
QUANTIZE_8BIT_HELP = "Quantize the language model to 8-bit LLM.int8 while loading (bitsandbytes; CUDA GPU or CPU)."


def resolve_device(device: str = "auto") -> str:
    """`auto` becomes cuda, mps or cpu, whichever is available first; anything else is returned as given, after
    checking that a requested CUDA device exists."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device} was asked for but torch sees no CUDA device; use --device cpu.")
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


SMALL_WEIGHTS_BYTES = 2 * 2**30  # float32 weights under this load as float32 on CPU (exact, and fast enough)
MEMORY_HEADROOM = 1.1  # the weights plus 10% (activations, KV cache, the processor, Python) must fit


def choose_dtype(dtype: str, device: str, weights: WeightsSize | None, available: int | None):
    """(the `dtype` for `from_pretrained`, the reason in words) following the policy in the module docstring."""
    import torch

    if dtype != "auto" and dtype not in DTYPE_NAMES:
        raise ValueError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPE_NAMES)}.")
    if dtype != "auto":
        return getattr(torch, dtype), f"--dtype {dtype}"
    saved = weights.dtype if weights is not None else None
    if device != "cpu":
        return "auto", f"the checkpoint's own dtype ({saved or 'as saved'}) on {device}"
    if weights is not None:
        fp32 = weights.bytes_at("float32")
        if fp32 < SMALL_WEIGHTS_BYTES and (available is None or fp32 * 4 < available):
            return torch.float32, f"the weights are small ({gib(fp32)} at float32)"
    if cpu_has_native_bf16():
        return torch.bfloat16, "this CPU computes bfloat16 natively (AVX512-BF16/AMX)"
    if saved is not None:
        return getattr(torch, saved), "the checkpoint's own dtype: this CPU has no native bfloat16"
    return "auto", "the checkpoint's own dtype: its size is unknown and this CPU has no native bfloat16"


def check_memory(model: str, weights: WeightsSize | None, torch_dtype, device: str, available: int | None):
    """Raise ValueError, naming the options, when the weights at `torch_dtype` cannot fit in `available` bytes."""
    if weights is None or available is None:
        return
    dtype = None if torch_dtype == "auto" else str(torch_dtype).removeprefix("torch.")
    needed = weights.bytes_at(dtype)
    if needed * MEMORY_HEADROOM <= available:
        return
    where = "GPU memory" if device.startswith("cuda") else "memory"
    smaller = [
        f"--dtype {name} ({gib(weights.bytes_at(name))})"
        for name in ("bfloat16", "float16")
        if name != (dtype or weights.dtype) and weights.bytes_at(name) * MEMORY_HEADROOM <= available
    ]
    options = smaller + [
        "--load_in_4bit (bitsandbytes, GPU or CPU: about a quarter of the 16-bit size; `llava-hf quantize` stores it)"
    ]
    options.append("a device map that offloads layers (from_pretrained(..., device_map='auto'))")
    raise ValueError(
        f"{model} needs {gib(needed)} for its weights at {dtype or weights.dtype} (+10% to run) but {gib(available)} "
        f"of {where} is available; use {', or '.join(options)}."
    )


def bitsandbytes_config(bits: int | None, compute_dtype=None):
    """A BitsAndBytesConfig for 4-bit nf4 (double quantization) or 8-bit, skipping `QUANTIZATION_SKIP_MODULES`;
    None for `bits=None`. `compute_dtype` (4-bit only) defaults to bfloat16."""
    if bits is None:
        return None
    if bits not in (4, 8):
        raise ValueError(f"quantization bits must be 4 or 8, got {bits}.")
    import torch
    from transformers import BitsAndBytesConfig

    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
        llm_int8_skip_modules=QUANTIZATION_SKIP_MODULES,
    )


NEXT_MODEL_TYPES = ("llava_next", "llava_hf_next")  # LLaVA-1.6 (AnyRes): the built-in's format and ours


def checkpoint_classes(path: str, revision: str | None = None) -> tuple[type, type]:
    """llava_hf's (model, processor) classes for a checkpoint: LLaVA-1.6 (AnyRes) or LLaVA-1.5, by its config."""
    from transformers import PretrainedConfig

    from ..modeling import LlavaHfForConditionalGeneration, LlavaHfNextForConditionalGeneration
    from ..processing import LlavaHfNextProcessor, LlavaHfProcessor

    model_type = PretrainedConfig.get_config_dict(path, revision=revision)[0].get("model_type")
    if model_type in NEXT_MODEL_TYPES:
        return LlavaHfNextForConditionalGeneration, LlavaHfNextProcessor
    return LlavaHfForConditionalGeneration, LlavaHfProcessor


def resolve_dtype_within_memory(model: str, path: str, dtype: str, device: str, quantization=None):
    """(the dtype to run in, the dtype to pass to `from_pretrained`): `choose_dtype` for a checkpoint, printed in one
    line, after `check_memory` (skipped for quantized loads, whose size depends on the quantization). The two differ
    when a CPU load casts a single-dtype checkpoint: it then loads lazily as saved and casts in place afterwards
    (`cast_parameters_releasing_pages`), which never holds two copies."""
    weights = read_weights_size(path) if os.path.isdir(path) else None
    available = available_memory(device)
    torch_dtype, reason = choose_dtype(dtype, device, weights, available)
    name = "as saved" if torch_dtype == "auto" else str(torch_dtype).removeprefix("torch.")
    size = f", weights {gib(weights.bytes_at(None if torch_dtype == 'auto' else name))}" if weights else ""
    print(f"llava-hf: dtype {name} on {device} ({reason}{size})", file=sys.stderr)
    if quantization is not None:
        return torch_dtype, torch_dtype
    check_memory(model, weights, torch_dtype, device, available)
    casts = torch_dtype != "auto" and weights is not None and [name] != list(weights.floating)
    if device == "cpu" and casts and len(weights.floating) == 1:
        return torch_dtype, "auto"
    return torch_dtype, torch_dtype


def checkpoint_dtype(model: str, dtype: str = "auto", device: str = "auto"):
    """The dtype the `llava-hf` commands load `model` in on `device` (printed with its reason, after the memory
    check), for your own `from_pretrained(..., dtype=...)` or `pipeline(..., dtype=...)`."""
    return resolve_dtype_within_memory(model, os.path.expanduser(model), dtype, resolve_device(device))[0]


def quantization_from_flags(load_in_4bit: bool, load_in_8bit: bool):
    """The `bitsandbytes_config` that `--load_in_4bit` / `--load_in_8bit` ask for (None for neither); ValueError for
    both."""
    if load_in_4bit and load_in_8bit:
        raise ValueError("choose one of --load_in_4bit and --load_in_8bit, not both.")
    return bitsandbytes_config(4 if load_in_4bit else 8 if load_in_8bit else None)


def quantized_cpu_dtype(path: str, revision: str | None, quantization=None):
    """What `dtype="auto"` means on CPU for a bitsandbytes model, or None for an unquantized one.

    - quantized while loading (`quantization` given): bfloat16. The quantized layers compute in bfloat16 (4-bit) or
      float16 (8-bit) whatever the rest is, so a float32 rest (vision tower, embeddings, lm_head: 2.5 GB for a 13B)
      would cost memory without making the answer more exact.
    - stored quantized (`llava-hf quantize`): "auto", the dtype it was saved in. transformers keeps a pre-quantized
      checkpoint's tensors in their stored dtype but casts bare parameters (CLIP's class embedding) to the one
      asked for, so asking for another would mix dtypes.
    """
    import torch
    from transformers import PreTrainedConfig

    if quantization is not None:
        return torch.bfloat16
    config, _ = PreTrainedConfig.get_config_dict(path, revision=revision)
    return "auto" if config.get("quantization_config") else None


def check_4bit_widths_for_cpu(model) -> None:
    """Refuse a 4-bit model whose layers bitsandbytes' CPU kernel cannot run, before its first forward fails deep
    inside bitsandbytes: on CPU it repacks each weight in blocks of `blocksize` (64) input features, so every
    quantized layer's input width must be a multiple of it. Every released LLM's widths are; toy widths may not be."""
    unfit = [
        name
        for name, module in model.named_modules()
        if type(module).__name__ == "Linear4bit" and module.in_features % module.weight.quant_state.blocksize
    ]
    if unfit:
        raise ValueError(
            f"4-bit on CPU needs layer input widths that are multiples of bitsandbytes' block of 64; {unfit[0]} "
            f"(and {len(unfit) - 1} more) is not. Use --load_in_8bit, no quantization, or a GPU."
        )


def not_loadable(model: str, error: OSError) -> str:
    return (
        f"could not load --model {model!r}: it is neither a checkpoint folder nor a Hub repo available "
        f"here (offline runs need it in the HF cache). Details: {error}"
    )


def load_processor(model: str, revision: str | None = None):
    """The processor `load_checkpoint` returns with the model, alone (no weights read)."""
    from .. import register_auto_classes

    register_auto_classes()  # folders saved in the older llava_hf format name our processor classes
    path = os.path.expanduser(model)
    try:
        return checkpoint_classes(path, revision)[1].from_pretrained(path, revision=revision)
    except OSError as error:
        raise ValueError(not_loadable(model, error)) from error


def load_checkpoint(
    model: str,
    *,
    revision: str | None = None,
    dtype: str = "auto",
    device: str | None = "auto",
    quantization=None,
    attn_implementation: str | None = None,
    chat_template: str | None = None,
    for_inference: bool = True,
):
    """`(model, processor)` from a checkpoint folder or Hub repo id, following the policy in the module docstring.

    `quantization`: a `bitsandbytes_config(...)` or None. `device=None` leaves the model where `from_pretrained` puts
    it (training: the Trainer places it). Raises ValueError
    naming the fix when the checkpoint cannot be found, has no chat template (inference), or an option is unavailable.
    """
    from .. import register_auto_classes
    from ..processing import resolve_chat_template

    register_auto_classes()  # folders saved in the older llava_hf format name our processor classes

    if not model:
        raise ValueError("--model is required: a checkpoint folder or a Hub repo id such as org/name.")
    path = os.path.expanduser(model)
    # A repo id is "name" or "org/name"; anything else that is not a folder is a mistyped path.
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_like_path and not os.path.isdir(path):
        raise ValueError(f"--model {model!r} is not a folder; give a checkpoint folder or a Hub repo id (org/name).")
    device = resolve_device(device) if device is not None else None
    quantized_dtype = None
    if dtype == "auto" and (device or "cpu") == "cpu":
        try:
            quantized_dtype = quantized_cpu_dtype(path, revision, quantization)
        except OSError:  # no config to read: from_pretrained below reports it
            pass
    if quantized_dtype is not None:
        torch_dtype = load_dtype = quantized_dtype  # bitsandbytes models: see quantized_cpu_dtype
    else:
        torch_dtype, load_dtype = resolve_dtype_within_memory(model, path, dtype, device or "cpu", quantization)
    kwargs = dict(revision=revision, dtype=load_dtype)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:
        if importlib.util.find_spec("bitsandbytes") is None:
            flag = "--load_in_4bit" if quantization.load_in_4bit else "--load_in_8bit"
            raise ValueError(
                f"{flag} needs bitsandbytes: `pip install bitsandbytes` (it runs on a CUDA GPU or the CPU), or drop {flag}."
            )
        kwargs["quantization_config"] = quantization
        if device is not None:
            kwargs["device_map"] = {"": device}
    try:
        model_class, processor_class = checkpoint_classes(path, revision)
        processor = processor_class.from_pretrained(path, revision=revision)
        loaded = model_class.from_pretrained(path, **kwargs)
        if load_dtype != torch_dtype:
            cast_parameters_releasing_pages(loaded, torch_dtype)
            loaded.config.dtype = torch_dtype
    except OSError as error:
        raise ValueError(not_loadable(model, error)) from error
    if chat_template:
        processor.chat_template = resolve_chat_template(chat_template)
    if not for_inference:
        return loaded, processor
    if quantization is None and device is not None:
        loaded.to(device)
    if device == "cpu":
        check_4bit_widths_for_cpu(loaded)
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            f"the processor of {model!r} has no chat template; pass --chat_template (e.g. vicuna_v1 for LLaVA-1.5) "
            "or save one with the checkpoint (LlavaProcessor(..., chat_template='vicuna_v1').save_pretrained(folder))."
        )
    # Decoder-only batches must be left-padded so every row's next token follows its own last prompt token.
    processor.tokenizer.padding_side = "left"
    loaded.eval()
    if device == "cpu":
        repack_4bit_releasing_pages(loaded)  # one copy of the 4-bit weights in memory, not two
    return loaded, processor
