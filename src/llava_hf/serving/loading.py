"""What `generate`, `chat` and `serve` share: load a checkpoint for inference, encode a conversation, sampling settings.

A checkpoint is a folder or a Hub repo id holding a model and its processor (the processor carries the chat template,
so every front end prompts the model exactly as it was trained). Loading goes through transformers' Auto classes, so
transformers' own llava-hf checkpoints load too.
"""

import importlib.util
import os
from dataclasses import dataclass, field

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, BatchFeature

import llava_hf  # noqa: F401  (registers the llava_hf model type with the Auto classes)
from llava_hf.processing import to_rgb

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class ModelArguments:
    """Which checkpoint to load and how."""

    model: str = field(default=None, metadata={"help": "Checkpoint folder or Hub repo id (org/name). Required."})
    revision: str | None = field(default=None, metadata={"help": "Hub revision (branch, tag or commit) of --model."})
    dtype: str = field(
        default="auto",
        metadata={
            "help": "Weights dtype: auto (the checkpoint's dtype on a GPU, float32 on CPU), float32, bfloat16, float16."
        },
    )
    device: str = field(default="auto", metadata={"help": "auto (cuda, then mps, then cpu), cpu, cuda, cuda:1, mps."})
    load_in_4bit: bool = field(
        default=False, metadata={"help": "Quantize the language model to 4-bit nf4 (needs bitsandbytes and a GPU)."}
    )
    load_in_8bit: bool = field(
        default=False, metadata={"help": "Quantize the language model to 8-bit (needs bitsandbytes and a GPU)."}
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, eager, flash_attention_2, ... (default: transformers' choice)."}
    )


@dataclass
class SamplingArguments:
    """How to sample an answer. temperature 0 is greedy decoding, the setting of LLaVA's evaluations."""

    max_new_tokens: int = field(default=256, metadata={"help": "Most tokens to generate per answer."})
    temperature: float = field(default=0.0, metadata={"help": "0 for greedy decoding; > 0 samples."})
    top_p: float = field(
        default=1.0, metadata={"help": "Nucleus sampling mass, in (0, 1] (used when temperature > 0)."}
    )

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"--max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature < 0:
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"--top_p must be in (0, 1], got {self.top_p}.")


def resolve_device(device: str) -> str:
    """`auto` becomes cuda, mps or cpu, whichever is available first; anything else is returned as given."""
    if device != "auto":
        return device
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def quantization_config(args: ModelArguments):
    """A BitsAndBytesConfig for --load_in_4bit / --load_in_8bit, or None. The vision tower and projector stay unquantized:
    transformers' default skip list holds only lm_head, and quantizing the small projector costs accuracy for no memory
    (LLaVA's QLoRA recipe keeps it out too)."""
    if args.load_in_4bit and args.load_in_8bit:
        raise ValueError("choose one of --load_in_4bit and --load_in_8bit, not both.")
    if not (args.load_in_4bit or args.load_in_8bit):
        return None
    if importlib.util.find_spec("bitsandbytes") is None:
        flag = "--load_in_4bit" if args.load_in_4bit else "--load_in_8bit"
        raise ValueError(f"{flag} needs bitsandbytes: `pip install bitsandbytes` (and a CUDA GPU), or drop {flag}.")
    from transformers import BitsAndBytesConfig

    skip = ["vision_tower", "multi_modal_projector", "lm_head"]
    if args.load_in_4bit:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_model_and_processor(args: ModelArguments):
    """Load `(model, processor)` for inference: eval mode, on the requested device, left padding for batches.

    Raises ValueError with the fix when the checkpoint cannot be found, has no chat template, or a requested option
    is unavailable.
    """
    if not args.model:
        raise ValueError("--model is required: a checkpoint folder or a Hub repo id such as org/name.")
    path = os.path.expanduser(args.model)
    # A repo id is "name" or "org/name"; anything else that is not a folder is a mistyped path.
    looks_like_path = args.model.startswith((".", "/", "~")) or args.model.count("/") > 1
    if looks_like_path and not os.path.isdir(path):
        raise ValueError(
            f"--model {args.model!r} is not a folder; give a checkpoint folder or a Hub repo id (org/name)."
        )
    if args.dtype != "auto" and args.dtype not in DTYPES:
        raise ValueError(f"--dtype {args.dtype!r} is not one of auto, {', '.join(DTYPES)}.")
    device = resolve_device(args.device)
    quantization = quantization_config(args)
    if args.dtype != "auto":
        dtype = DTYPES[args.dtype]
    elif device == "cpu":
        dtype = torch.float32  # bf16/fp16 matmuls on CPU are slow or unsupported; the checkpoint may be bf16
    else:
        dtype = "auto"
    kwargs = dict(revision=args.revision, dtype=dtype)
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    if quantization is not None:
        kwargs.update(quantization_config=quantization, device_map={"": device})
    try:
        processor = AutoProcessor.from_pretrained(path, revision=args.revision)
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as error:
        raise ValueError(
            f"could not load --model {args.model!r}: it is neither a checkpoint folder nor a Hub repo available "
            f"here (offline runs need it in the HF cache). Details: {error}"
        ) from error
    if quantization is None:
        model.to(device)
    if not getattr(processor, "chat_template", None):
        raise ValueError(
            f"the processor of {args.model!r} has no chat template; save one with the checkpoint "
            "(e.g. LlavaProcessor(..., chat_template='vicuna_v1').save_pretrained(folder))."
        )
    # Decoder-only batches must be left-padded so every row's next token follows its own last prompt token.
    processor.tokenizer.padding_side = "left"
    return model.eval(), processor


def load_image(path: str) -> Image.Image:
    """Open an image file as RGB, with an error that names the file when it is missing or unreadable."""
    if not os.path.isfile(path):
        raise ValueError(f"image file {path!r} does not exist.")
    try:
        with Image.open(path) as image:
            image.load()
            return to_rgb(image)
    except (OSError, Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read image {path!r}: {error}") from error


def encode_conversation(processor, messages: list[dict], images: list[Image.Image]) -> BatchFeature:
    """Render `messages` (transformers' chat format, `{"type": "image"}` parts where images go) with the checkpoint's
    chat template plus the generation prompt, and process text and `images` into a batch of one.

    Raises ValueError when the number of image parts differs from `len(images)` or a role is not allowed.
    """
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(text=[text], images=images or None, return_tensors="pt")


def generation_kwargs(sampling: SamplingArguments, tokenizer) -> dict:
    """Keyword arguments for `model.generate` from the sampling settings."""
    kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=pad_token_id(tokenizer))
    if sampling.temperature > 0:
        kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    return kwargs


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id, or its EOS id for checkpoints saved without a pad token (padding is masked anyway)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
