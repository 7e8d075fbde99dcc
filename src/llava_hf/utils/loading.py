"""Loading a checkpoint: the one dtype / device / quantization / chat-template policy of every command.

A checkpoint is a folder or a Hub repo id holding a model and its processor; ours and transformers' built-in llava
both load, through `AutoModelForImageTextToText` and `AutoProcessor`. The policy:

- device `auto`: cuda, then mps, then cpu.
- dtype `auto`: the checkpoint's own dtype on an accelerator, float32 on CPU (bf16/fp16 matmuls on CPU are slow or
  unsupported, and a released checkpoint is usually fp16). `float32`, `bfloat16`, `float16` force one.
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
  continues every row from its own last prompt token.
"""

from __future__ import annotations

import importlib.util
import os

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


def resolve_dtype(dtype: str, device: str):
    """The `dtype` argument for `from_pretrained`: a torch dtype, or "auto" (the checkpoint's) off the CPU."""
    import torch

    if dtype != "auto" and dtype not in DTYPE_NAMES:
        raise ValueError(f"--dtype {dtype!r} is not one of auto, {', '.join(DTYPE_NAMES)}.")
    if dtype != "auto":
        return getattr(torch, dtype)
    return torch.float32 if device == "cpu" else "auto"


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
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import llava_hf  # noqa: F401  (registers the llava_hf model type with the Auto classes)

    from ..processing import resolve_chat_template

    if not model:
        raise ValueError("--model is required: a checkpoint folder or a Hub repo id such as org/name.")
    path = os.path.expanduser(model)
    # A repo id is "name" or "org/name"; anything else that is not a folder is a mistyped path.
    looks_like_path = model.startswith((".", "/", "~")) or model.count("/") > 1
    if looks_like_path and not os.path.isdir(path):
        raise ValueError(f"--model {model!r} is not a folder; give a checkpoint folder or a Hub repo id (org/name).")
    device = resolve_device(device) if device is not None else None
    torch_dtype = resolve_dtype(dtype, device or "cpu")
    kwargs = dict(revision=revision, dtype=torch_dtype)
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
        processor = AutoProcessor.from_pretrained(path, revision=revision)
        if dtype == "auto" and (device or "cpu") == "cpu":
            kwargs["dtype"] = quantized_cpu_dtype(path, revision, quantization) or kwargs["dtype"]
        loaded = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as error:
        raise ValueError(
            f"could not load --model {model!r}: it is neither a checkpoint folder nor a Hub repo available "
            f"here (offline runs need it in the HF cache). Details: {error}"
        ) from error
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
    return loaded.eval(), processor
