"""llava_hf as an lmms-eval model: `lmms-eval --model llava_hf_native --model_args pretrained=<folder or repo> ...`.

lmms-eval finds it through the `lmms_eval.models` entry point in setup.cfg (`manifest` below), so installing llava_hf
next to lmms-eval is all it takes. The name is not `llava_hf`: that is lmms-eval's own class for transformers'
built-in Llava, which preprocesses with the stock image processor; entry points may overwrite built-in names, and
replacing lmms-eval's class for every user who happens to have llava_hf installed would be a surprise.

What it adds over lmms-eval's `llava_hf`: LLaVA's exact preprocessing and prompts — the checkpoint's own processor and
chat template through `load_checkpoint` (pad-to-square with the image mean, `to_rgb` for alpha, palette and 16-bit
images, the image before the question as LLaVA's evaluation scripts put it), on native llava_hf checkpoints and on
anything llava_hf loads.

- `generate_until`: the task's context as one user turn after its images, the chat template's generation prompt, the
  task's `generation_kwargs` (greedy unless a temperature is set), cut at the first `until` string.
- `loglikelihood`: log P(continuation | prompt) summed over the continuation's tokens, where the prompt is the same
  rendered user turn and the continuation (lmms-eval passes it with its leading delimiter, e.g. " B") is appended to
  the text after the generation prompt, as LLaVA's templates write an answer; plus whether greedy decoding would
  have produced exactly those tokens.

This module imports lmms_eval at the top: only lmms-eval loads it.
"""

from __future__ import annotations

import torch
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest

from ..utils.loading import load_checkpoint
from .generation import load_image

MODEL_NAME = "llava_hf_native"


def manifest() -> ModelManifest:
    """The `lmms_eval.models` entry point: lmms-eval's registry calls it to learn the model name and class."""
    return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LlavaHfNative")


class LlavaHfNative(lmms):
    """An lmms-eval "simple" model (requests carry a context string and a `doc_to_visual` function)."""

    def __init__(
        self,
        pretrained: str,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | str = 1,
        chat_template: str | None = None,
        max_new_tokens: int = 128,
        **kwargs,
    ) -> None:
        super().__init__()
        if kwargs:
            raise ValueError(f"llava_hf_native does not take {sorted(kwargs)}; see its docstring for its arguments.")
        if int(batch_size) != 1:
            raise ValueError("llava_hf_native answers one request at a time; pass batch_size=1.")
        self.model, self.processor = load_checkpoint(
            pretrained, device=device, dtype=dtype, chat_template=chat_template
        )
        self.max_new_tokens = int(max_new_tokens)

    @property
    def device(self):
        return self.model.device

    def _document(self, task: str, split: str, doc_id: int):
        return self.task_dict[task][split][doc_id]

    def _images(self, doc_to_visual, document) -> list:
        return [load_image(image) for image in (doc_to_visual(document) or [])]

    def _prompt(self, context: str, num_images: int) -> str:
        content = [{"type": "image"}] * num_images + [{"type": "text", "text": context}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def _encode(self, text: str, images: list):
        # The chat templates write no BOS: the tokenizer adds it, as at training and in llava_hf's own evaluation.
        inputs = self.processor(images=images or None, text=text, return_tensors="pt").to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    def generate_until(self, requests: list[Instance]) -> list[str]:
        answers = []
        for request in requests:
            context, generation_kwargs, doc_to_visual, doc_id, task, split = request.args
            images = self._images(doc_to_visual, self._document(task, split, doc_id))
            inputs = self._encode(self._prompt(context, len(images)), images)
            settings = dict(generation_kwargs or {})
            until = settings.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            temperature = float(settings.pop("temperature", 0) or 0)
            sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
            if settings.get("top_p") is not None and temperature > 0:
                sampling["top_p"] = float(settings["top_p"])
            tokenizer = self.processor.tokenizer
            pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=int(settings.get("max_new_tokens", self.max_new_tokens)),
                    num_beams=int(settings.get("num_beams", 1)),
                    pad_token_id=pad_token_id,
                    **sampling,
                )
            text = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for stop in until:
                if stop:
                    text = text.split(stop)[0]
            answers.append(text.strip())
            self.cache_hook.add_partial("generate_until", (context, generation_kwargs), answers[-1])
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        results = []
        for request in requests:
            if len(request.args) != 6:
                raise ValueError("llava_hf_native scores (context, continuation, doc_to_visual, doc_id, task, split).")
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            document = self._document(task, split, doc_id)
            if not isinstance(continuation, str):
                continuation = continuation(document)
            images = self._images(doc_to_visual, document)
            prompt = self._prompt(context, len(images))
            prompt_ids = self._encode(prompt, images)["input_ids"][0]
            inputs = self._encode(prompt + continuation, images)
            full_ids = inputs["input_ids"][0]
            if len(full_ids) <= len(prompt_ids) or not torch.equal(full_ids[: len(prompt_ids)], prompt_ids):
                raise ValueError(
                    f"the continuation {continuation!r} changes how the prompt tokenizes; give it with its leading "
                    "delimiter (lmms-eval's target_delimiter), as LLaVA's templates write answers after the prompt."
                )
            with torch.inference_mode():
                logits = self.model(**inputs).logits[0].float()
            # Position i predicts token i + 1: the continuation's tokens are predicted from the positions before them.
            predicted = logits[len(prompt_ids) - 1 : len(full_ids) - 1]
            targets = full_ids[len(prompt_ids) :]
            log_probs = torch.log_softmax(predicted, dim=-1).gather(1, targets[:, None])[:, 0]
            greedy = bool((predicted.argmax(dim=-1) == targets).all())
            results.append((float(log_probs.sum()), greedy))
            self.cache_hook.add_partial("loglikelihood", (context, continuation), results[-1])
        return results

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError("llava_hf_native answers single-turn requests (generate_until, loglikelihood).")
