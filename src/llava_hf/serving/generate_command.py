# llava-hf generate --model PATH_OR_REPO --image photo.jpg --prompt "What is in this image?" [--max_new_tokens 256]
"""One-shot answer: one image, one question, the answer printed to stdout (nothing else is printed there).

The prompt is wrapped in the checkpoint's chat template with the image placed first in the user turn, as LLaVA was
trained (the original `llava/train/train.py`, `preprocess_multimodal`), so the answer matches what `chat` and `serve` would give for the same settings.
"""

import sys

from llava_hf.serving.arguments import GenerateArguments, ModelArguments, SamplingArguments
from llava_hf.utils.command_line import build_parser, parse_into_dataclasses, usage_error


def user_message(prompt: str, with_image: bool) -> dict:
    """A user turn in transformers' chat format, the image part first."""
    content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
    return {"role": "user", "content": content}


def answer(model, processor, messages: list[dict], images: list, sampling: SamplingArguments) -> str:
    """Generate the assistant's next turn for `messages` and return it as text (special tokens removed)."""
    import torch

    from llava_hf.serving.inference import encode_conversation, generation_kwargs

    inputs = encode_conversation(processor, messages, images).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.inference_mode():
        output = model.generate(**inputs, **generation_kwargs(sampling, processor.tokenizer))
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    return processor.tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def main(argv: list[str] | None = None) -> int:
    prog = "llava-hf generate"
    parser = build_parser((ModelArguments, SamplingArguments, GenerateArguments), prog)
    try:
        model_args, sampling, args = parse_into_dataclasses(parser, argv)
        if not args.prompt:
            raise ValueError("--prompt is required.")
        from llava_hf.serving.inference import load_image, load_model_and_processor  # torch + transformers

        images = [load_image(args.image)] if args.image else []
        model, processor = load_model_and_processor(model_args)
        text = answer(model, processor, [user_message(args.prompt, bool(images))], images, sampling)
    except ValueError as error:
        return usage_error(prog, error)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
