"""LLaVA-1.6 (AnyRes) against the original code's own outputs (tests/assets/make_llava_next_reference.py ran the
original `process_anyres_image` / `prepare_inputs_labels_for_multimodal` on the tiny model's weights): pixel tensors
bit for bit, inputs_embeds and logits within 1e-5 (fp32), token counts over hundreds of image sizes for the tiny and
the released 1.6 configuration, and where transformers' built-in LlavaNext counts differently."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPVisionConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from llava_hf.modeling import LlavaHfNextConfig, LlavaHfNextForConditionalGeneration
from llava_hf.testing import (
    load_tiny_tokenizer,
    make_image,
    make_tiny_next_model,
    make_tiny_next_processor,
    make_tiny_text_config,
)

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "llava_next"
REFERENCE = json.loads((ASSETS / "reference.json").read_text())
TENSORS = load_file(ASSETS / "reference.safetensors")
PROMPTS = [("USER: ", "\nWhat is this? ASSISTANT:"), ("A chat. USER: ", "\nDescribe it. ASSISTANT: It is")]
FORWARD_SIZES = [(40, 48), (100, 20), (20, 100), (1, 1), (1, 300), (300, 1), (64, 64), (33, 95), (97, 31), (47, 188)]
FLAT_FORWARD = 4
TOLERANCE = 1e-5
REAL_PINPOINTS = [[672, 336], [336, 672], [672, 672], [336, 1008], [1008, 336]]  # (height, width)


def sizes_of(key: str) -> list[tuple[int, int]]:
    """The (width, height) sizes the reference counted, in its order."""
    return [tuple(int(v) for v in size.split("x")) for size in REFERENCE[key]["counts"]]


def forward_case(index: int):
    """The images and prompt of reference case `index` (same seeds as the reference script)."""
    size = FORWARD_SIZES[index]
    images = [make_image(index, size)] + ([make_image(99, FORWARD_SIZES[0])] if index % 3 == 2 else [])
    before, after = PROMPTS[index % 2]
    return images, before + "<image>" * len(images) + after


def expand_placeholders(ids: list[int], counts: list[int], image_token_id: int) -> list[int]:
    """The original's ids (one -200 per image) with the k-th placeholder written as counts[k] image tokens."""
    expanded, counts = [], iter(counts)
    for token in ids:
        expanded += [image_token_id] * next(counts) if token == -200 else [token]
    return expanded


@pytest.mark.parametrize("index", range(len(FORWARD_SIZES)))
def test_pixel_values_are_the_originals_bit_for_bit(index):
    import hashlib

    processor = make_tiny_next_processor()
    images, _ = forward_case(index)
    batch = processor.image_processor(images, return_tensors="pt")
    for number, (pixels, expected) in enumerate(
        zip(batch["pixel_values"], REFERENCE["pixel_values"][f"spatial_unpad/{index}"])
    ):
        tiles = expected["shape"][0]
        assert list(pixels[:tiles].shape) == expected["shape"]
        assert not pixels[tiles:].any()  # batch padding beyond this image's tiles is zeros
        digest = hashlib.sha256(pixels[:tiles].float().contiguous().numpy().tobytes()).hexdigest()
        assert digest == expected["sha256"], f"image {number} of case {index}: pixel values differ from the original"


def test_pixel_values_at_the_released_geometry_are_the_originals_bit_for_bit():
    """336 px tiles and the five released pinpoints: transformers' PIL LlavaNextImageProcessor is the original."""
    import hashlib

    from llava_hf.processing import build_next_image_processor

    image_processor = build_next_image_processor(336, REAL_PINPOINTS)
    expected = REFERENCE["pixel_values"]["real"]
    for seed, size in enumerate(expected):
        width, height = (int(v) for v in size.split("x"))
        pixels = image_processor(make_image(seed, (width, height)), return_tensors="pt")["pixel_values"][0]
        assert list(pixels.shape) == expected[size]["shape"]
        digest = hashlib.sha256(pixels.float().contiguous().numpy().tobytes()).hexdigest()
        assert digest == expected[size]["sha256"], f"{size}: pixel values differ from the original"


@pytest.mark.parametrize("merge", ["spatial_unpad", "flat"])
def test_inputs_embeds_and_logits_match_the_original(merge):
    model = make_tiny_next_model(mm_patch_merge_type=merge)
    processor = make_tiny_next_processor(config=model.config)
    worst_embeds = worst_logits = 0.0
    for index in range(len(FORWARD_SIZES) if merge == "spatial_unpad" else FLAT_FORWARD):
        images, text = forward_case(index)
        batch = processor(text=text, images=images, return_tensors="pt")
        key = f"{merge}/{index}"
        ids = batch["input_ids"][0].tolist()
        counts = [processor.num_image_tokens(image.size[::-1]) for image in images]
        assert ids == expand_placeholders(TENSORS[f"{key}/input_ids"].tolist(), counts, processor.image_token_id)
        expected_embeds = TENSORS[f"{key}/inputs_embeds"]
        assert len(ids) == expected_embeds.shape[0]  # the processor's token counts are the original's feature counts
        with torch.no_grad():
            output = model(**batch, output_hidden_states=True)
        worst_embeds = max(worst_embeds, (output.hidden_states[0][0] - expected_embeds).abs().max().item())
        worst_logits = max(worst_logits, (output.logits[0, -8:] - TENSORS[f"{key}/logits"]).abs().max().item())
    assert worst_embeds <= TOLERANCE
    assert worst_logits <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["spatial_unpad", "flat"])
def test_tiny_processor_tokens_equal_model_features_and_the_original_for_every_size(merge):
    """>= 200 sizes through the whole path: processor (pixels + placeholder expansion) -> model features."""
    model = make_tiny_next_model(mm_patch_merge_type=merge)
    processor = make_tiny_next_processor(config=model.config)
    sizes = sizes_of(f"tiny/{merge}")
    assert len(sizes) >= 200
    expected = REFERENCE[f"tiny/{merge}"]["counts"]
    for start in range(0, len(sizes), 16):
        chunk = sizes[start : start + 16]
        images = [make_image(seed, size) for seed, size in enumerate(chunk)]
        batch = processor(
            text=["<image>"] * len(chunk), images=[[image] for image in images], return_tensors="pt", padding=True
        )
        tokens = (batch["input_ids"] == processor.image_token_id).sum(-1).tolist()
        with torch.no_grad():
            features = model.model.get_image_features(
                batch["pixel_values"], image_sizes=batch["image_sizes"]
            ).pooler_output
        assert tokens == [len(feature) for feature in features]
        assert tokens == [expected[f"{w}x{h}"] for w, h in chunk]
        assert batch["image_sizes"].tolist() == [[h, w] for w, h in chunk]


def real_sized_config(merge: str) -> LlavaHfNextConfig:
    """The released 1.6 geometry (336 px tiles, patch 14, five pinpoints) on a one-layer, 8-wide tower."""
    tokenizer = load_tiny_tokenizer()
    vision = CLIPVisionConfig(
        hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=1, image_size=336, patch_size=14
    )
    return LlavaHfNextConfig(
        vision_config=vision,
        text_config=make_tiny_text_config(tokenizer),
        image_token_index=tokenizer.image_token_id,
        image_grid_pinpoints=REAL_PINPOINTS,
        mm_patch_merge_type=merge,
    )


@pytest.mark.parametrize("merge", ["spatial_unpad", "flat"])
def test_released_geometry_counts_equal_the_original_for_every_size(merge):
    """Processor counts and the model's own packing (of zero tile features) for >= 200 sizes at 336 px."""
    config = real_sized_config(merge)
    model = LlavaHfNextForConditionalGeneration(config).eval()
    processor = make_tiny_next_processor(config=config)
    sizes = sizes_of(f"real/{merge}")
    assert len(sizes) >= 200
    expected = [REFERENCE[f"real/{merge}"]["counts"][f"{w}x{h}"] for w, h in sizes]
    hw_sizes = [(h, w) for w, h in sizes]
    assert processor._get_num_multimodal_tokens(image_sizes=hw_sizes).num_image_tokens == expected
    tiles = model.model.tiles_per_image(hw_sizes)
    hidden = config.text_config.hidden_size
    packed = model.model.pack_image_features([torch.zeros(count, 576, hidden) for count in tiles], hw_sizes)
    assert [len(features) for features in packed] == expected


def test_builtin_llava_next_counts_differ_from_the_original_only_by_its_unpad_rounding():
    """transformers' LlavaNext rounds `h * scale` to 7 digits before truncating; the original truncates. Where that
    crosses an integer and changes the padding's parity, the built-in keeps two more rows (or columns)."""
    config = real_sized_config("spatial_unpad")
    ours = make_tiny_next_processor(config=config)
    builtin = ours.to_builtin()
    assert isinstance(builtin, LlavaNextProcessor)
    sizes = sizes_of("real/spatial_unpad")
    rounding = set(REFERENCE["real/spatial_unpad"]["builtin_rounding_differs"])
    assert len(rounding) >= 20 and "88x55" in rounding
    hw_sizes = [(h, w) for w, h in sizes]
    builtin_counts = builtin._get_num_multimodal_tokens(image_sizes=hw_sizes).num_image_tokens
    for (w, h), count in zip(sizes, builtin_counts):
        original = REFERENCE["real/spatial_unpad"]["counts"][f"{w}x{h}"]
        if f"{w}x{h}" in rounding:
            assert count > original, (w, h)
        else:
            assert count == original, (w, h)
    # The built-in model agrees with its own processor: stock transformers is self-consistent, not the original.
    builtin_model = LlavaNextForConditionalGeneration(config.to_builtin()).eval()
    odd = [(55, 88), (99, 88)]  # (height, width) of 88x55 and 88x99
    hidden = config.text_config.hidden_size
    features = [torch.zeros(image_size_to_num_patches(size, REAL_PINPOINTS, 336), 576, hidden) for size in odd]
    _, lengths = builtin_model.model.pack_image_features(features, torch.tensor(odd), "default", torch.zeros(hidden))
    assert lengths.tolist() == builtin._get_num_multimodal_tokens(image_sizes=odd).num_image_tokens
    assert lengths.tolist() != ours._get_num_multimodal_tokens(image_sizes=odd).num_image_tokens
