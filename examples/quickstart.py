"""Ask a LLaVA checkpoint about an image, three ways.

    python examples/quickstart.py --model PATH_OR_REPO_ID --image photo.jpg --question "What is in the image?"

PATH_OR_REPO_ID is any llava_hf checkpoint: the folder `llava-hf demo` writes (llava_demo/model by default),
a folder from `llava-hf convert`, or a Hub repo id.
"""

import argparse

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

# What llava_hf saves is transformers' built-in llava format and loads without this import; it registers the
# llava_hf model type, which checkpoints with a projector the built-in cannot express (linear, deeper) keep.
import llava_hf  # noqa: F401
from llava_hf.utils.loading import checkpoint_dtype


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder or Hub repo id")
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--question", default="What is in the image?")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    image = Image.open(args.image)

    # The dtype rule of the llava-hf commands: float32 for small models on CPU, bfloat16 on CPUs that have it
    # natively, else the checkpoint's own; a model too big for memory is refused here, before loading.
    dtype = checkpoint_dtype(args.model)

    # 1. The pipeline: chat messages in, text out.
    pipe = pipeline("image-text-to-text", model=args.model, dtype=dtype)
    messages = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": args.question}]}
    ]
    answer = pipe(text=messages, max_new_tokens=args.max_new_tokens, return_full_text=False)[0]["generated_text"]
    print("pipeline:", answer)

    # 2. The classes: render the checkpoint's chat template, process, generate.
    model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype)
    processor = AutoProcessor.from_pretrained(args.model, backend="pil")  # PIL's bicubic: LLaVA's exact pixels
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": args.question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device, model.dtype)
    output = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
    print("generate:", processor.decode(output[0, inputs.input_ids.shape[1] :], skip_special_tokens=True))

    # 3. Several questions in one left-padded batch: the same answers as one at a time.
    processor.tokenizer.padding_side = "left"
    questions = [args.question, "Describe the image in detail."]
    prompts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
            add_generation_prompt=True,
        )
        for question in questions
    ]
    batch = processor(images=[image, image], text=prompts, padding=True, return_tensors="pt").to(
        model.device, model.dtype
    )
    outputs = model.generate(**batch, max_new_tokens=args.max_new_tokens, do_sample=False)
    for question, row in zip(questions, outputs[:, batch.input_ids.shape[1] :]):
        print(f"batch: {question!r} -> {processor.decode(row, skip_special_tokens=True)!r}")


if __name__ == "__main__":
    main()
