# llava-hf chat --model PATH_OR_REPO [--image photo.jpg] [--temperature 0.2 --top_p 0.9 --max_new_tokens 512]
"""Multi-turn chat about an image in the terminal, the answer streamed token by token.

Type a question and press Enter. Commands:
    /image PATH   load another image and start a new conversation about it
    /reset        forget the conversation (the current image is kept and re-attached to the next question)
    /quit         leave (end of input does the same)

The conversation is rendered with the checkpoint's own chat template on every turn. The image goes at the front of
the first user turn of a conversation, one image per conversation, as LLaVA-1.5 was trained (the original `llava/train/train.py`, `preprocess_multimodal`).
"""

import sys
import threading

from llava_hf.serving.arguments import ChatArguments, ModelArguments, SamplingArguments
from llava_hf.serving.generate_command import user_message
from llava_hf.utils.command_line import build_parser, parse_into_dataclasses, usage_error

HELP = "commands: /image PATH (new image, new conversation), /reset (forget the conversation), /quit"


class Conversation:
    """The turns so far and the image they are about."""

    def __init__(self, image=None):
        self.image = image
        self.messages: list[dict] = []

    def reset(self, image=None):
        self.image = image if image is not None else self.image
        self.messages = []

    def ask(self, text: str) -> tuple[list[dict], list]:
        """Messages and images for the model once the user has asked `text`."""
        with_image = self.image is not None and not self.messages
        self.messages.append(user_message(text, with_image))
        return self.messages, [self.image] if self.image is not None else []


def stream_answer(model, processor, messages, images, sampling: SamplingArguments, out) -> str:
    """Generate in a background thread and write the text to `out` as it arrives; return the whole answer."""
    import torch
    from transformers import TextIteratorStreamer

    from llava_hf.serving.inference import encode_conversation, generation_kwargs

    inputs = encode_conversation(processor, messages, images).to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    context = model.config.get_text_config().max_position_embeddings
    if inputs["input_ids"].shape[1] + sampling.max_new_tokens > context:
        raise ValueError(
            f"the conversation ({inputs['input_ids'].shape[1]} tokens) plus --max_new_tokens "
            f"{sampling.max_new_tokens} exceeds the model's context of {context} tokens; type /reset."
        )
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    failure = []

    def run():
        try:
            with torch.inference_mode():
                model.generate(**inputs, **generation_kwargs(sampling, processor.tokenizer), streamer=streamer)
        except Exception as error:  # re-raised in the main thread below, where the user sees it
            failure.append(error)
            streamer.end()  # otherwise the loop below waits forever for text that never comes

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    pieces = []
    for piece in streamer:
        pieces.append(piece)
        out.write(piece)
        out.flush()
    thread.join()
    if failure:
        raise failure[0]
    return "".join(pieces).strip()


def main(argv: list[str] | None = None) -> int:
    prog = "llava-hf chat"
    parser = build_parser((ModelArguments, SamplingArguments, ChatArguments), prog)
    try:
        model_args, sampling, args = parse_into_dataclasses(parser, argv)
        from llava_hf.serving.inference import load_image, load_model_and_processor  # torch + transformers

        conversation = Conversation(load_image(args.image) if args.image else None)
        model, processor = load_model_and_processor(model_args)
    except ValueError as error:
        return usage_error(prog, error)
    out = sys.stdout
    out.write(f"llava-hf chat with {model_args.model} ({'image loaded' if args.image else 'no image'}). {HELP}\n")
    while True:
        out.write("USER: ")
        out.flush()
        line = sys.stdin.readline()
        if not line:  # end of input
            out.write("\n")
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            conversation.reset()
            out.write("(conversation cleared)\n")
            continue
        if text.startswith("/image"):
            path = text[len("/image") :].strip()
            try:
                conversation.reset(load_image(path))
            except ValueError as error:
                out.write(f"(error: {error})\n")
                continue
            out.write(f"(loaded {path}; new conversation)\n")
            continue
        if text.startswith("/"):
            out.write(f"(unknown command {text.split()[0]}; {HELP})\n")
            continue
        messages, images = conversation.ask(text)
        out.write("ASSISTANT:")
        try:
            reply = stream_answer(model, processor, messages, images, sampling, out)
        except ValueError as error:
            messages.pop()  # the question was not answered; keep the history consistent
            out.write(f"\n(error: {error})\n")
            continue
        out.write("\n")
        messages.append({"role": "assistant", "content": [{"type": "text", "text": reply}]})


if __name__ == "__main__":
    sys.exit(main())
