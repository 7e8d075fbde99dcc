"""What `generate`, `chat` and `serve` share: load a checkpoint for inference, encode a conversation, sampling settings.

A checkpoint is a folder or a Hub repo id holding a model and its processor (the processor carries the chat template,
so every front end prompts the model exactly as it was trained). Loading goes through llava_hf's own classes, which read
both llava_hf's folders and transformers' built-in llava ones (llava-hf/* repos).
"""

import os

from PIL import Image
from transformers import BatchFeature

from llava_hf.processing import to_rgb
from llava_hf.serving.arguments import ModelArguments, SamplingArguments  # noqa: F401  (re-exported)
from llava_hf.utils.loading import load_checkpoint, quantization_from_flags


def load_model_and_processor(args: ModelArguments):
    """Load `(model, processor)` for inference with the policy of `llava_hf.utils.loading` (eval mode, the requested
    device, left padding for batches). Raises ValueError with the fix when the checkpoint cannot be found, has no chat
    template, or a requested option is unavailable."""
    return load_checkpoint(
        args.model,
        revision=args.revision,
        dtype=args.dtype,
        device=args.device,
        quantization=quantization_from_flags(args.load_in_4bit, args.load_in_8bit),
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
