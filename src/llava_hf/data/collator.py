"""The training collator: rows -> `input_ids`, `labels`, `pixel_values`, with exactly the answers supervised.

LLaVA's most reported training failure was silent: masks computed by splitting the rendered prompt on separator
strings and counting tokens disagreed with the real tokenization, and whole samples trained on nothing (the original `llava/train/train.py` `preprocess_v1` and `llava/mm_utils.py` `tokenizer_image_token`).
Here the mask comes from the tokenizer itself: the chat template marks each answer and its end token with
`{% generation %}`, and `return_assistant_tokens_mask` maps those character spans onto the real token offsets.
The conversation is tokenized with one `<image>` token per image (a special token, so it is its own token boundary),
then each one is expanded to its image's token count, which is what the processor produces (a test checks they
agree): `image_seq_length` for LLaVA-1.5, a count that depends on the image's size for LLaVA-1.6 (AnyRes,
`LlavaHfNextProcessor.num_image_tokens`), read from the file header for undecoded images. Image positions, padding, the system prompt, user turns and role prefixes get label -100.

A sample that cannot be masked correctly is an error that names it, never a sample silently trained on zero tokens.

Two batch layouts:
- padded (default): `[B, T]` rows padded on `padding_side` with `attention_mask`;
- padding-free (`padding_free=True`): all samples concatenated into one `[1, sum(T_i)]` row with `position_ids` that
  restart at 0 for each sample, no `attention_mask` and `use_cache=False`. transformers then builds a block-diagonal
  causal mask from the restarts (SDPA/eager/flex; only when no cache is built, hence `use_cache=False`), and
  flash-attention uses them as varlen boundaries, so no sample attends to another and the loss equals the padded one.
  Plain SDPA and eager attend over the whole packed row under the block-diagonal mask, (sum of T_i)^2 scores against
  B x max(T_i)^2 padded, which makes packing slower than padding; `data.packed_attention.use_packed_attention(model)`
  (done by `build_trainer`) runs SDPA per sample instead, sum(T_i^2) (benchmarks/RESULTS_training.md).
"""

from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import torch
from PIL import Image

from ..processing import to_rgb
from ..processing.template_rendering import render_with_answer_spans
from .formats import to_conversation

IGNORE_INDEX = -100


class SampleError(ValueError):
    """A training sample that cannot be encoded correctly; the message names the sample and the fix."""


@dataclass
class EncodedSample:
    input_ids: list[int]  # image placeholders already expanded to each image's token count
    labels: list[int]  # IGNORE_INDEX everywhere except the supervised answer tokens
    images: list  # the sample's PIL images, in placeholder order


class LlavaCollator:
    """Turns rows of the library's row schema into a model batch.

    Args:
        processor: a `LlavaHfProcessor` (tokenizer, image processor, `image_seq_length`, chat template).
        chat_template: a template name or Jinja source; default the processor's. Stage 1 uses "plain".
        max_length: truncate longer samples to this many tokens (counted after image expansion). Truncation that
            cuts through an image's tokens, or leaves no supervised token, raises `SampleError`.
        padding_side: "right" (training default) or "left".
        padding_free: pack the batch into one row with restarting `position_ids` instead of padding.
        pad_to_multiple_of: round padded lengths up (tensor-core friendly shapes on GPU).
    """

    def __init__(
        self,
        processor,
        chat_template: str | None = None,
        max_length: int | None = None,
        padding_side: str = "right",
        padding_free: bool = False,
        pad_to_multiple_of: int | None = None,
    ):
        from ..processing import resolve_chat_template

        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.chat_template = resolve_chat_template(chat_template or processor.chat_template)
        if "{% generation" not in self.chat_template and "{%- generation" not in self.chat_template:
            raise ValueError(
                "the chat template has no {% generation %} markers, so the answer tokens cannot be located; use one "
                "of llava_hf's templates (get_chat_template) or add the markers around each answer and its end token."
            )
        self.max_length = max_length
        self.padding_side = padding_side
        self.padding_free = padding_free
        self.pad_to_multiple_of = pad_to_multiple_of
        self.image_token_id = processor.image_token_id
        self.image_seq_length = processor.image_seq_length
        # LLaVA-1.6 processors count tokens per image size; LLaVA-1.5 ones spend image_seq_length on every image
        self.count_image_tokens = getattr(processor, "num_image_tokens", None)
        pad_token_id = self.tokenizer.pad_token_id
        self.pad_token_id = self.tokenizer.eos_token_id if pad_token_id is None else pad_token_id
        self.special_prefix, self.special_suffix = _special_tokens_around(self.tokenizer)

    def encode(self, row: dict) -> EncodedSample:
        """Tokenize one row and build its labels; raises `SampleError` for anything that would train wrongly."""
        sample_id = row.get("id", "?")
        conversation = to_conversation(row)
        images = list(row.get("images") or [])
        encoding = self.tokenizer.apply_chat_template(
            conversation,
            chat_template=self.chat_template,
            tokenize=True,
            return_dict=True,
            return_assistant_tokens_mask=True,
        )
        token_ids, assistant_mask = encoding["input_ids"], encoding["assistant_masks"]
        # The templates render no BOS: like the processor, let the tokenizer add its special tokens (one BOS for
        # Llama), unless the rendered text already starts with BOS (a user template that writes it).
        if not (token_ids and token_ids[0] == self.tokenizer.bos_token_id):
            token_ids = self.special_prefix + token_ids + self.special_suffix
            assistant_mask = [0] * len(self.special_prefix) + assistant_mask + [0] * len(self.special_suffix)
        placeholders = token_ids.count(self.image_token_id)
        if placeholders != len(images):
            raise SampleError(
                f"sample {sample_id} has {placeholders} image placeholder(s) but {len(images)} image(s); every image "
                "needs one {'type': 'image'} part in the messages (run `llava-hf data check`)."
            )

        input_ids, labels = [], []
        counts = iter(self.image_token_counts(images))
        for token_id, supervised in zip(token_ids, assistant_mask):
            if token_id == self.image_token_id:  # image positions receive features, they are never predicted
                count = next(counts)
                input_ids.extend([token_id] * count)
                labels.extend([IGNORE_INDEX] * count)
            else:
                input_ids.append(token_id)
                labels.append(token_id if supervised else IGNORE_INDEX)
        labels[0] = IGNORE_INDEX  # nothing predicts the first token; also keeps packed samples independent
        if not any(label != IGNORE_INDEX for label in labels):
            raise SampleError(
                f"sample {sample_id} has no supervised tokens (no assistant turn, or only empty answers); it would "
                "train on nothing. Fix or drop it (run `llava-hf data check`)."
            )

        if self.max_length is not None and len(input_ids) > self.max_length:
            cut = self.max_length
            kept_tokens, kept_images = input_ids[:cut].count(self.image_token_id), 0
            for count in self.image_token_counts(images):
                if kept_tokens < count:
                    break
                kept_tokens, kept_images = kept_tokens - count, kept_images + 1
            if kept_tokens:  # the cut leaves part of an image's tokens
                raise SampleError(
                    f"sample {sample_id} is {len(input_ids)} tokens long and max_length={self.max_length} cuts "
                    "through an image's tokens; raise max_length or shorten the sample."
                )
            input_ids, labels = input_ids[:cut], labels[:cut]
            if not any(label != IGNORE_INDEX for label in labels):
                raise SampleError(
                    f"sample {sample_id}: truncation to max_length={self.max_length} removes every answer token, so "
                    "it would train on nothing; raise max_length or shorten the prompt."
                )
            images = images[:kept_images]
        return EncodedSample(input_ids=input_ids, labels=labels, images=images)

    def encoded_lengths(self, rows: list[dict], conversations: list[list[dict]] | None = None) -> list[int | None]:
        """What `encode` gives each row, without building it: the length in tokens after image expansion (before
        any `max_length` truncation), or None where `encode` raises `SampleError` (placeholders != images, nothing
        supervised). The preflight check runs this on every row, so it does what `apply_chat_template(...,
        return_assistant_tokens_mask=True)` does in `encode` (render with the answer spans, in Python for the default
        templates: `processing.template_rendering`; tokenize the batch in one call) without its per-token Python
        loop: a row needs only one supervised token, found by looking up the token under each character of the
        answer spans until one is not the first token or an image token.
        A test checks the lengths equal `len(encode(row).input_ids)`. `conversations`: the rows' `to_conversation`,
        when the caller has them already.
        """
        rendered, spans = render_with_answer_spans(
            conversations or [to_conversation(row) for row in rows],
            self.chat_template,
            self.tokenizer.special_tokens_map,  # what apply_chat_template gives the template
        )
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None and backend.truncation is None and backend.padding is None:
            # The Rust tokenizer directly, as `tokenizer(...)` calls it with these settings, without building the
            # Python lists of ids and masks for each row that the preflight never reads.
            backend.encode_special_tokens = bool(self.tokenizer.split_special_tokens)
            encodings = backend.encode_batch(rendered, add_special_tokens=False)
        else:
            encodings = self.tokenizer(rendered, add_special_tokens=False).encodings
        lengths: list[int | None] = []
        for row, encoding, answer_spans in zip(rows, encodings, spans):
            token_ids = encoding.ids
            prefixed = not (token_ids and token_ids[0] == self.tokenizer.bos_token_id)  # as in `encode`
            extra = len(self.special_prefix) + len(self.special_suffix) if prefixed else 0
            placeholders = token_ids.count(self.image_token_id)
            if prefixed:
                placeholders += (self.special_prefix + self.special_suffix).count(self.image_token_id)
            first = -1 if prefixed else 0  # `encode` never supervises the first token of the whole sequence
            supervised = any(
                token is not None and token != first and token_ids[token] != self.image_token_id
                for start, end in answer_spans
                for token in map(encoding.char_to_token, range(start, end))
            )
            images = list(row.get("images") or [])
            if placeholders != len(images) or not supervised:
                lengths.append(None)
            else:  # each placeholder becomes its image's tokens (LLaVA-1.6: a count that depends on the image size)
                lengths.append(len(token_ids) + extra + sum(self.image_token_counts(images)) - placeholders)
        return lengths

    def image_token_counts(self, images: list) -> list[int]:
        """Tokens each image takes in the sequence (PIL images, paths or undecoded `{"path", "bytes"}` images)."""
        if self.count_image_tokens is None:
            return [self.image_seq_length] * len(images)
        return [self.count_image_tokens(image_size(image)) for image in images]

    def pixel_values(self, images: list) -> dict[str, torch.Tensor]:
        """`pixel_values` ([num_images, 3, H, W]; LLaVA-1.6: [num_images, max tiles, 3, H, W]) and, for AnyRes,
        `image_sizes` ((height, width) per image)."""
        processed = self.processor.image_processor(images=[to_rgb(image) for image in images], return_tensors="pt")
        return {key: processed[key] for key in ("pixel_values", "image_sizes") if key in processed}

    def __call__(self, rows: list[dict]) -> dict:
        samples = [self.encode(row) for row in rows]
        batch = self.pack(samples) if self.padding_free else self.pad(samples)
        images = [image for sample in samples for image in sample.images]
        if images:
            batch.update(self.pixel_values(images))
        return batch

    def pad(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        length = max(len(sample.input_ids) for sample in samples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(samples), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(samples), length), dtype=torch.long)
        for row, sample in enumerate(samples):
            size = len(sample.input_ids)
            span = slice(0, size) if self.padding_side == "right" else slice(length - size, length)
            input_ids[row, span] = torch.tensor(sample.input_ids)
            labels[row, span] = torch.tensor(sample.labels)
            attention_mask[row, span] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def pack(self, samples: list[EncodedSample]) -> dict[str, torch.Tensor]:
        input_ids = torch.tensor([token for sample in samples for token in sample.input_ids])
        labels = torch.tensor([label for sample in samples for label in sample.labels])
        position_ids = torch.cat([torch.arange(len(sample.input_ids)) for sample in samples])
        # use_cache=False: transformers only derives the per-sample mask from position_ids when no cache is built.
        return {
            "input_ids": input_ids[None],
            "labels": labels[None],
            "position_ids": position_ids[None],
            "use_cache": False,
        }


# EXIF orientations that swap width and height (`to_rgb` applies them before the processor sees the image).
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def image_size(image) -> tuple[int, int]:
    """(height, width) of an image as the processor will see it (after EXIF rotation), from the header only."""
    if isinstance(image, Image.Image):
        opened, close = image, False
    else:
        if isinstance(image, (str, Path)):
            image = {"path": str(image), "bytes": None}
        source = BytesIO(image["bytes"]) if image.get("bytes") is not None else image["path"]
        opened, close = Image.open(source), True
    try:
        width, height = opened.size
        if opened.getexif().get(0x0112) in TRANSPOSING_ORIENTATIONS:
            width, height = height, width
    finally:
        if close:
            opened.close()
    return height, width


def _special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The ids the tokenizer adds before and after a text with `add_special_tokens=True` (Llama: `[bos]`, `[]`),
    what `processor(text)` gets and `tokenizer.apply_chat_template(tokenize=True)` (no special tokens) does not."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return full[:start], full[start + len(plain) :]
    raise ValueError("cannot tell which special tokens this tokenizer adds around a text.")


def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of padded positions when consecutive `batch_size` samples are padded to their longest (0 when packed)."""
    padded = total = 0
    for start in range(0, len(lengths), batch_size):
        chunk = lengths[start : start + batch_size]
        padded += max(chunk) * len(chunk)
        total += sum(chunk)
    return 1 - total / padded if padded else 0.0


__all__ = ["IGNORE_INDEX", "EncodedSample", "LlavaCollator", "SampleError", "padding_fraction"]
