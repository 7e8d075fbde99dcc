"""Answers for a task: each example's prompt through the processor's chat template, batched left-padded greedy
generation, each answer appended to the predictions file as soon as its batch finishes (see `task.py`)."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

from ..utils.io import JsonlLog
from .predictions import read_predictions
from .task import Example, Task


def load_image(image) -> Image.Image:
    """A PIL image from a PIL image or a path, converted the way LLaVA sees it (`to_rgb`)."""
    from ..processing import to_rgb  # here, not at the top: scoring a predictions file needs no transformers

    if isinstance(image, Image.Image):
        return to_rgb(image)
    path = Path(image)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist; check the image folder passed with the data.")
    with Image.open(path) as opened:
        opened.load()
        return to_rgb(opened)


def build_conversation(example: Example, system_prompt: str | None = None) -> list[dict]:
    """The chat messages for one example: optional system turn, then one user turn with the images first."""
    content = [{"type": "image"} for _ in example.images] + [{"type": "text", "text": example.prompt}]
    messages = [{"role": "user", "content": content}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system_prompt}]})
    return messages


def render_prompts(task: Task, processor, examples: list[Example]) -> list[str]:
    """Each example's full prompt text as the processor's chat template renders it, ending with the assistant cue."""
    return [
        processor.apply_chat_template(build_conversation(example, task.system_prompt), add_generation_prompt=True)
        for example in examples
    ]


def generate_answers(model, processor, prompts: list[str], images: list[list], max_new_tokens: int = 128) -> list[str]:
    """Greedy answers for one batch of rendered prompts (with their images), left-padded, decoded without specials."""
    import torch

    tokenizer = processor.tokenizer
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # every row must end at its last real token; see task.py's docstring
    try:
        flat_images = [load_image(image) for sample_images in images for image in sample_images]
        # Templates that write BOS themselves would get a second one from the tokenizer (transformers'
        # apply_chat_template makes the same check).
        bos = tokenizer.bos_token
        add_special_tokens = not (bos and all(prompt.startswith(bos) for prompt in prompts))
        inputs = processor(
            images=flat_images or None,
            text=prompts,
            padding=True,
            return_tensors="pt",
            add_special_tokens=add_special_tokens,
        )
    finally:
        tokenizer.padding_side = previous_side
    inputs = inputs.to(model.device)
    if "pixel_values" in inputs:
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.inference_mode():
        output = model.generate(
            **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad_token_id
        )
    new_tokens = output[:, inputs["input_ids"].shape[1] :]
    return [text.strip() for text in processor.batch_decode(new_tokens, skip_special_tokens=True)]


def generate_predictions(
    task: Task,
    model,
    processor,
    predictions_path: str | os.PathLike,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    model_id: str | None = None,
    progress: bool = True,
) -> dict[str, dict]:
    """Answer every example not yet in `predictions_path`, appending one record per answer; returns all records.

    Examples are batched longest prompt first, so a batch holds prompts of similar length and little padding.
    Raises if the file holds ids the task does not have or a prompt that differs from the task's (another run's file).
    """
    max_new_tokens = max_new_tokens or task.max_new_tokens
    model_id = model_id or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    predictions_path = Path(predictions_path)
    done = read_predictions(predictions_path) if predictions_path.exists() else {}
    prompts = dict(zip((example.id for example in task.examples), render_prompts(task, processor, task.examples)))
    _check_same_run(task, done, prompts, predictions_path)
    pending = [example for example in task.examples if example.id not in done]
    pending.sort(key=lambda example: len(prompts[example.id]), reverse=True)
    _check_image_files(pending)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(task.examples), initial=len(done), desc=task.name, unit="ex", disable=not progress)
    with JsonlLog(predictions_path) as writer:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            texts = generate_answers(
                model,
                processor,
                [prompts[example.id] for example in batch],
                [example.images for example in batch],
                max_new_tokens=max_new_tokens,
            )
            records = [
                {
                    "question_id": example.id,
                    "prompt": prompts[example.id],
                    "text": text,
                    "model_id": model_id,
                    "metadata": {"task": task.name, "decoding": "greedy", "max_new_tokens": max_new_tokens},
                }
                for example, text in zip(batch, texts)
            ]
            writer.append(*records)
            done.update((record["question_id"], record) for record in records)
            bar.update(len(batch))
    bar.close()
    return done


def _check_image_files(examples: list[Example]) -> None:
    """Fail before the first batch, not hours into a run, when image files are missing (scoring needs none)."""
    missing = [
        (example.id, image)
        for example in examples
        for image in example.images
        if not isinstance(image, Image.Image) and not Path(image).is_file()
    ]
    if missing:
        question_id, image = missing[0]
        raise FileNotFoundError(
            f"{len(missing)} image file(s) do not exist, e.g. {image} of question {question_id!r}; pass the folder "
            "holding the benchmark's images (--image-folder)."
        )


def _check_same_run(task: Task, done: dict[str, dict], prompts: dict[str, str], path: Path) -> None:
    unknown = [question_id for question_id in done if question_id not in prompts]
    if unknown:
        raise ValueError(
            f"{path} holds {len(unknown)} answer(s) for ids that task {task.name!r} does not have (e.g. "
            f"{unknown[:3]}); it belongs to another dataset or split: use another output folder."
        )
    changed = [qid for qid, record in done.items() if "prompt" in record and record["prompt"] != prompts[qid]]
    if changed:
        raise ValueError(
            f"{path} was written with different prompts (e.g. id {changed[0]!r}: a different prompt format, chat "
            "template or system prompt); use another output folder or delete the file to start over."
        )
