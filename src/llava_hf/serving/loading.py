"""What `generate`, `chat` and `serve` share: load a checkpoint for inference, encode a conversation, sampling settings.

A checkpoint is a folder or a Hub repo id holding a model and its processor (the processor carries the chat template,
so every front end prompts the model exactly as it was trained). Loading goes through transformers' Auto classes, so
transformers' own llava-hf checkpoints load too.
"""

import os
from dataclasses import dataclass, field

from PIL import Image
from transformers import BatchFeature

from llava_hf.processing import to_rgb
from llava_hf.utils.loading import bitsandbytes_config, load_checkpoint


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


def load_model_and_processor(args: ModelArguments):
    """Load `(model, processor)` for inference with the policy of `llava_hf.utils.loading` (eval mode, the requested
    device, left padding for batches). Raises ValueError with the fix when the checkpoint cannot be found, has no chat
    template, or a requested option is unavailable."""
    if args.load_in_4bit and args.load_in_8bit:
        raise ValueError("choose one of --load_in_4bit and --load_in_8bit, not both.")
    return load_checkpoint(
        args.model,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        quantization=bitsandbytes_config(4 if args.load_in_4bit else 8 if args.load_in_8bit else None),
        attn_implementation=args.attn_implementation,
    )


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
