"""LLaVA-1.5's `group_by_modality_length` batching: image+text samples and text-only samples in separate batches,
samples of similar length together, so batches pad less and a text-only batch never pads to an image's 576 tokens.

    lengths, has_image = estimate_lengths(dataset, processor.tokenizer, processor.image_seq_length)
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=16, megabatch_size=128, seed=42)

The order follows the original's `LengthGroupedSampler(group_by_modality=True)` (LLaVA `llava_trainer.py`): each
modality is shuffled and cut into megabatches of `megabatch_size` samples, each megabatch is sorted by length (longest
first) and cut into batches, and the megabatches are shuffled. `LlavaSFTTrainer` uses one optimizer step's samples
(per-device batch x world size x gradient accumulation, as the original passed `world_size * grad_accum`) as the
megabatch: sorting inside it changes which micro-batch and rank a sample lands in, never which optimizer step sees it.
Unlike the original, the batches of a megabatch are not balanced across ranks by total length (that spreads lengths
across batches and brings the padding back); instead their order within the megabatch is shuffled, so no rank always
gets the longest batch.

Leftovers: each modality's last, incomplete megabatch goes to the end of the epoch, image samples first, then
text-only samples. The DataLoader cuts the index stream into batches of `batch_size`, so when the number of image
samples is not a multiple of `batch_size` exactly one batch per epoch, the one where the two leftovers meet, holds
both modalities. Avoiding it would need uneven batch sizes or dropping samples; every sample is yielded exactly once
per epoch instead (the final batch may be short, as with a random sampler).

The order depends only on `seed + epoch` (like accelerate's `SeedableRandomSampler`); Trainer calls `set_epoch` before
each epoch and, on resume, skips the batches already trained in that epoch, so a resumed run sees the same order.
"""

import torch
from torch.utils.data import Sampler

from ..data.formats import to_conversation


def estimate_lengths(dataset, tokenizer, image_seq_length: int, batch_size: int = 1000) -> tuple[list[int], list[bool]]:
    """Each row's approximate length in tokens, and whether it has an image, without opening any image.

    The estimate is the number of tokens of the conversation's texts (all turns joined with newlines, tokenized
    without special tokens) plus `image_seq_length` per image placeholder (`{"type": "image"}` part). It leaves out
    the chat template's role prefixes and separators (a few tokens per turn), which is enough to sort by.
    Only the `messages` column is read (a `datasets.Dataset` is narrowed to it first, so the `images` column, paths or
    bytes, is never decoded); a list of row dicts works too.
    """
    if hasattr(dataset, "select_columns"):
        if "messages" not in dataset.column_names:
            raise ValueError(
                f"group_by_modality_length needs rows with a `messages` column; this dataset has "
                f"{dataset.column_names}. Load the data with llava_hf.data.load_rows."
            )
        dataset = dataset.select_columns(["messages"])
    text_lengths: list[int] = []
    texts: list[str] = []

    def flush():
        if texts:
            text_lengths.extend(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"])
            texts.clear()

    image_counts = []
    for row in dataset:
        parts = [part for message in to_conversation(row) for part in message["content"]]
        image_counts.append(sum(part["type"] == "image" for part in parts))
        texts.append("\n".join(part.get("text", "") for part in parts if part["type"] == "text"))
        if len(texts) == batch_size:
            flush()
    flush()
    lengths = [length + count * image_seq_length for length, count in zip(text_lengths, image_counts)]
    has_image = [count > 0 for count in image_counts]
    return lengths, has_image


def modality_length_grouped_indices(
    lengths: list[int], has_image: list[bool], batch_size: int, megabatch_size: int, generator: torch.Generator
) -> list[int]:
    """One epoch's order of all indices (each exactly once); see the module docstring for the rules."""
    if len(lengths) != len(has_image):
        raise ValueError(f"{len(lengths)} lengths but {len(has_image)} has_image flags; give one of each per sample.")
    if batch_size < 1 or megabatch_size % batch_size:
        raise ValueError(f"megabatch_size ({megabatch_size}) must be a positive multiple of batch_size ({batch_size}).")
    megabatches: list[list[int]] = []
    leftovers: list[list[int]] = []
    for modality in (True, False):  # image+text first, so the image leftover comes before the text-only one
        indices = torch.tensor(
            [index for index, flag in enumerate(has_image) if bool(flag) is modality], dtype=torch.long
        )
        shuffled = indices[torch.randperm(len(indices), generator=generator)].tolist()
        chunks = [shuffled[start : start + megabatch_size] for start in range(0, len(shuffled), megabatch_size)]
        if chunks and len(chunks[-1]) < megabatch_size:
            leftovers.append(chunks.pop())
        megabatches += chunks

    order: list[int] = []
    for position in torch.randperm(len(megabatches), generator=generator).tolist():
        longest_first = sorted(megabatches[position], key=lambda index: -lengths[index])
        batches = [longest_first[start : start + batch_size] for start in range(0, megabatch_size, batch_size)]
        # Full megabatches hold whole batches only, so shuffling them keeps every batch boundary in place.
        for batch_position in torch.randperm(len(batches), generator=generator).tolist():
            order += batches[batch_position]
    for leftover in leftovers:
        order += sorted(leftover, key=lambda index: -lengths[index])
    return order


class ModalityLengthGroupedSampler(Sampler[int]):
    """Yields every index once per epoch in `modality_length_grouped_indices` order, seeded by `seed + epoch`.

    Args:
        lengths: each sample's (estimated) length; see `estimate_lengths`.
        has_image: whether each sample has at least one image (its modality).
        batch_size: the DataLoader's batch size (per device).
        megabatch_size: samples sorted together; a multiple of `batch_size` (Trainer: one optimizer step's samples).
        seed: the run's seed (`data_seed` or `seed`).
    """

    def __init__(self, lengths: list[int], has_image: list[bool], batch_size: int, megabatch_size: int, seed: int = 0):
        self.lengths = list(lengths)
        self.has_image = [bool(flag) for flag in has_image]
        self.batch_size = batch_size
        self.megabatch_size = megabatch_size
        self.seed = seed
        self.epoch = 0
        modality_length_grouped_indices([], [], batch_size, megabatch_size, torch.Generator())  # validate early

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        yield from modality_length_grouped_indices(
            self.lengths, self.has_image, self.batch_size, self.megabatch_size, generator
        )


__all__ = ["ModalityLengthGroupedSampler", "estimate_lengths", "modality_length_grouped_indices"]
