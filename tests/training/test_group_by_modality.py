"""LLaVA-1.5's group_by_modality_length batching: every sample once per epoch, no batch mixing image and text-only
samples (except the one where the two leftovers meet), less padding than random batches, the same order after a
resume, lengths estimated without opening images, and a tiny training run with the flag on."""

import math
import random
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import skip_first_batches
from accelerate.data_loader import BatchSamplerShard
from datasets import Dataset
from torch.utils.data import BatchSampler
from trl import SFTConfig, TrlParser

from llava_hf.data import ROW_FEATURES, LlavaCollator, padding_fraction
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.testing import load_tiny_tokenizer, make_tiny_model, make_tiny_processor
from llava_hf.training import (
    LlavaRunArguments,
    ModalityLengthGroupedSampler,
    build_trainer,
    estimate_lengths,
    modality_length_grouped_indices,
)

REPO = Path(__file__).resolve().parents[2]


def mixed_batches(order: list[int], has_image: list[bool], batch_size: int) -> list[int]:
    """Positions of the batches (DataLoader cuts of `batch_size`) holding both modalities."""
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    return [position for position, batch in enumerate(batches) if len({has_image[index] for index in batch}) > 1]


@pytest.mark.parametrize(
    "num_images, num_texts, batch_size, megabatch_size",
    [(37, 13, 4, 8), (40, 0, 4, 16), (0, 9, 4, 8), (3, 2, 4, 8), (64, 32, 8, 8), (50, 30, 3, 12)],
)
def test_every_index_once_and_batches_keep_one_modality(num_images, num_texts, batch_size, megabatch_size):
    rng = random.Random(num_images * 100 + num_texts)
    has_image = [True] * num_images + [False] * num_texts
    rng.shuffle(has_image)
    lengths = [rng.randint(5, 400) + (576 if flag else 0) for flag in has_image]
    orders = []
    for epoch in range(3):
        sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size, megabatch_size, seed=7)
        sampler.set_epoch(epoch)
        order = list(sampler)
        assert sorted(order) == list(range(len(lengths))) and len(sampler) == len(lengths)
        assert list(sampler) == order  # deterministic given seed + epoch
        orders.append(order)
        mixed = mixed_batches(order, has_image, batch_size)
        if num_images % batch_size == 0 or num_texts == 0:
            assert mixed == []
        else:  # only where the image leftover meets the text-only leftover
            leftover_texts = num_texts % megabatch_size
            assert mixed == [(len(order) - leftover_texts) // batch_size]
        # every full megabatch is sorted longest first, batch by batch
        full = (num_images // megabatch_size + num_texts // megabatch_size) * megabatch_size
        for start in range(0, full, batch_size):
            batch_lengths = [lengths[index] for index in order[start : start + batch_size]]
            assert batch_lengths == sorted(batch_lengths, reverse=True)
    if len(lengths) >= 3 * megabatch_size:  # enough samples that two shuffles practically never agree
        assert orders[0] != orders[1]  # a new order each epoch
        assert list(ModalityLengthGroupedSampler(lengths, has_image, batch_size, megabatch_size, seed=8)) != orders[0]


def test_ranks_get_disjoint_single_modality_batches_under_ddp_sharding():
    """Under DDP accelerate shards the DataLoader's batches round-robin (`BatchSamplerShard`): with a megabatch of
    per-device batch x 2 ranks x 2 accumulation steps, each rank's batches keep one modality and together the ranks
    see every sample (accelerate repeats the first samples only to even out the last round, as for any sampler)."""
    rng = random.Random(0)
    has_image = [rng.random() < 0.7 for _ in range(64)]
    lengths = [rng.randint(5, 400) for _ in has_image]
    sampler = ModalityLengthGroupedSampler(lengths, has_image, batch_size=4, megabatch_size=16, seed=1)
    shards = [
        list(BatchSamplerShard(BatchSampler(sampler, 4, drop_last=False), num_processes=2, process_index=rank))
        for rank in (0, 1)
    ]
    seen = [index for shard in shards for batch in shard for index in batch]
    assert set(seen) == set(range(64)) and len(seen) - 64 < 8
    mixed = [batch for shard in shards for batch in shard if len({has_image[index] for index in batch}) > 1]
    assert len(mixed) <= 1


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="multiple of batch_size"):
        ModalityLengthGroupedSampler([1, 2], [True, False], batch_size=4, megabatch_size=6)
    with pytest.raises(ValueError, match="one of each per sample"):
        modality_length_grouped_indices([1, 2], [True], 1, 1, torch.Generator())


def test_lengths_are_estimated_without_opening_images(tmp_path):
    processor = make_tiny_processor()
    rows = make_shape_rows(12, seed=3, image_size=16, lengths="realistic")
    for row in rows:  # paths that do not exist: decoding any image would fail
        row["images"] = [str(tmp_path / f"missing-{row['id']}.png") for _ in row["images"]]
    rows.append(
        {
            "id": "two-images",
            "images": [str(tmp_path / "a.png"), str(tmp_path / "b.png")],
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Same?"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
            ],
        }
    )
    dataset = Dataset.from_list(rows, features=ROW_FEATURES)
    lengths, has_image = estimate_lengths(dataset, processor.tokenizer, processor.image_seq_length)
    tokenizer = load_tiny_tokenizer()
    for row, length, flag in zip(rows, lengths, has_image):
        texts = [part["text"] for message in row["messages"] for part in message["content"] if part["type"] == "text"]
        images = sum(part["type"] == "image" for message in row["messages"] for part in message["content"])
        assert length == len(tokenizer("\n".join(texts), add_special_tokens=False).input_ids) + 16 * images
        assert flag is (images > 0)
    assert has_image[-1] and lengths[-1] > 32
    with pytest.raises(ValueError, match="messages"):
        estimate_lengths(Dataset.from_dict({"text": ["a"]}), processor.tokenizer, 16)


@pytest.fixture(scope="module")
def realistic_mix():
    """The benchmark's length mix (short VQA, long captions, multi-turn, ~10% text-only) and its real encoded lengths
    with the tiny model's 16 image tokens (chat template, `<s>`, image tokens included)."""
    rows = make_shape_rows(320, seed=0, image_size=16, lengths="realistic")
    collator = LlavaCollator(make_tiny_processor())
    return rows, [len(collator.encode(row).input_ids) for row in rows]


# image_seq_length -> (random, grouped with megabatch 8, grouped with megabatch 64) padding the test found (seed 0):
# 16: 52.7%, 51.2%, 12.9%; 576 (LLaVA-1.5's CLIP-L/336): 24.5%, 19.7%, 4.8%.
@pytest.mark.parametrize("image_seq_length, modality_gain", [(16, 0.005), (576, 0.03)])
def test_grouped_batches_pad_less_than_random_batches(realistic_mix, image_seq_length, modality_gain):
    """Padding at batch 8 measured on the real lengths (expanded to `image_seq_length` tokens per image), averaged
    over 10 random orders / 10 epochs; the sampler only sees the estimates. Megabatch 8 is one device without
    gradient accumulation (modality separation only), 64 e.g. 8 devices or 8 accumulation steps."""
    rows, encoded = realistic_mix
    real = [length + (image_seq_length - 16) * len(row["images"]) for row, length in zip(rows, encoded)]
    lengths, has_image = estimate_lengths(rows, make_tiny_processor().tokenizer, image_seq_length)
    assert 0 < sum(has_image) < len(rows)

    def average_padding(orders):
        return sum(padding_fraction([real[index] for index in order], 8) for order in orders) / len(orders)

    random_padding = average_padding(
        [torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed)).tolist() for seed in range(10)]
    )
    grouped = {}
    for megabatch_size in (8, 64):
        sampler = ModalityLengthGroupedSampler(lengths, has_image, 8, megabatch_size, seed=0)
        orders = []
        for epoch in range(10):
            sampler.set_epoch(epoch)
            orders.append(list(sampler))
        grouped[megabatch_size] = average_padding(orders)
    print(f"image_seq_length {image_seq_length}, padding at batch 8: random {random_padding:.1%}, grouped {grouped}")
    assert random_padding > 0.2
    assert grouped[8] < random_padding - modality_gain  # modality separation alone
    assert grouped[64] < 0.3 * random_padding  # + length sorting within an optimizer step's samples


class RecordingCollator:
    """Records the ids of each batch, then collates it for real."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, rows):
        self.batches.append([row["id"] for row in rows])
        return self.collator(rows)


def sft_config(tmp_path, **overrides) -> SFTConfig:
    settings = dict(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        learning_rate=5e-3,
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        activation_checkpointing=False,
        disable_tqdm=True,
        seed=3,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def test_training_with_the_flag_groups_batches_trains_and_resumes_in_order(tmp_path):
    rows = make_shape_rows(22, seed=5, image_size=32, lengths="realistic")
    modality = {row["id"]: bool(row["images"]) for row in rows}
    assert 0 < sum(modality.values()) < len(rows)
    run = LlavaRunArguments(stage="finetune", group_by_modality_length=True)
    trainer = build_trainer(run, sft_config(tmp_path), make_tiny_model(), make_tiny_processor(), rows)
    recorder = RecordingCollator(trainer.data_collator)
    trainer.data_collator = recorder
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert all(len({modality[row_id] for row_id in batch}) == 1 for batch in recorder.batches[:4])

    # The trainer's dataloader: one optimizer step's samples (4) per megabatch, seeded by the run's seed.
    dataloader = trainer.get_train_dataloader()
    sampler = dataloader.batch_sampler.sampler
    assert isinstance(sampler, ModalityLengthGroupedSampler)
    assert (sampler.batch_size, sampler.megabatch_size, sampler.seed) == (4, 4, 3)
    recorder.batches.clear()
    for epoch in (0, 1):
        dataloader.set_epoch(epoch)  # what Trainer does before each epoch
        for _ in dataloader:
            pass
    epochs = recorder.batches[:6], recorder.batches[6:]
    for epoch, batches in enumerate(epochs):
        sampler.set_epoch(epoch)
        assert [row_id for batch in batches for row_id in batch] == [rows[index]["id"] for index in sampler]
    assert all(sorted(row_id for batch in epoch for row_id in batch) == sorted(modality) for epoch in epochs)
    assert epochs[0] != epochs[1]
    # Resume in epoch 1 after 2 batches: Trainer skips them (`skip_first_batches`), then sets the epoch.
    recorder.batches.clear()
    skipped = skip_first_batches(dataloader, 2)
    skipped.set_epoch(1)
    for _ in skipped:
        pass
    assert recorder.batches == epochs[1][2:]


def test_flag_conflicts_with_group_by_length(tmp_path):
    run = LlavaRunArguments(stage="finetune", group_by_modality_length=True)
    with pytest.raises(ValueError, match="group_by_modality_length replaces"):
        build_trainer(
            run,
            sft_config(tmp_path, train_sampling_strategy="group_by_length"),
            make_tiny_model(),
            make_tiny_processor(),
            make_shape_rows(4, image_size=32),
        )


def test_recipes_parse_and_v15_stage2_groups_by_modality_length(tmp_path):
    for recipe in sorted((REPO / "examples" / "configs").glob("*.yaml")):
        settings = yaml.safe_load(recipe.read_text())
        expected = recipe.name.startswith(("llava_v1.5_7b_stage2", "llava_v1.6_7b_stage2"))
        assert settings.get("group_by_modality_length", False) is expected, recipe.name
        config_path = tmp_path / recipe.name
        config_path.write_text(recipe.read_text())
        run, _ = TrlParser((LlavaRunArguments, SFTConfig)).parse_args_and_config(
            ["--config", str(config_path), "--output_dir", str(tmp_path / "out"), "--bf16", "false", "--tf32", "false"]
        )
        assert run.group_by_modality_length is expected
