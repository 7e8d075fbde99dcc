"""The collator with LLaVA-1.6 (AnyRes): every image gets its own token count (by size, EXIF rotation included, also
from undecoded files), several images per turn, truncation never cuts an image's tokens, padding-free packing gives
the padded loss, and the preflight check counts the real per-image tokens."""

import io

import torch
from PIL import Image

from llava_hf.data import LlavaCollator, SampleError, check_rows
from llava_hf.data.collator import image_size
from llava_hf.testing import make_image, make_tiny_next_model, make_tiny_next_processor

SIZES = [(40, 48), (100, 20), (20, 100), (1, 1), (97, 31), (64, 64)]  # (width, height): 72, 42, 52, 36, 68, 88 tokens


def row(index: int, sizes, question="What differs?", answer="The second one is wider.") -> dict:
    """One user turn holding one image part per size (interleaved with text), one answer."""
    content = []
    for number, _ in enumerate(sizes):
        content += [{"type": "text", "text": f"Image {number + 1}:"}, {"type": "image"}]
    content.append({"type": "text", "text": question})
    return {
        "id": f"row-{index}",
        "images": [make_image(index * 10 + number, size) for number, size in enumerate(sizes)],
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def test_each_image_gets_its_size_dependent_count_and_the_model_accepts_the_batch():
    processor = make_tiny_next_processor()
    model = make_tiny_next_model()
    rows = [row(0, SIZES[:2]), row(1, SIZES[2:5]), row(2, SIZES[5:])]
    batch = LlavaCollator(processor)(rows)
    counts = [processor.num_image_tokens((h, w)) for w, h in SIZES]
    assert len(set(counts)) == len(counts)  # all different: a fixed count would be wrong for every one
    tokens = (batch["input_ids"] == processor.image_token_id).sum(-1).tolist()
    assert tokens == [sum(counts[:2]), sum(counts[2:5]), sum(counts[5:])]
    assert batch["image_sizes"].tolist() == [[h, w] for w, h in SIZES]
    assert batch["pixel_values"].dim() == 5  # [images, max tiles, 3, 32, 32]
    # the processor builds the same ids for the first row's prompt (token for token, images expanded alike)
    prompt = processor.apply_chat_template(rows[0]["messages"][:1], add_generation_prompt=True)
    expected = processor(text=prompt, images=rows[0]["images"], return_tensors="pt")["input_ids"][0].tolist()
    assert batch["input_ids"][0, : len(expected)].tolist() == expected
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


def test_padding_free_packing_gives_the_padded_loss():
    processor = make_tiny_next_processor()
    model = make_tiny_next_model()
    rows = [row(0, SIZES[:2]), row(1, SIZES[2:3]), row(2, SIZES[3:6])]
    padded = LlavaCollator(processor)(rows)
    packed = LlavaCollator(processor, padding_free=True)(rows)
    assert packed["input_ids"].shape[1] == int(padded["attention_mask"].sum())
    assert torch.equal(packed["image_sizes"], padded["image_sizes"])
    with torch.no_grad():
        torch.testing.assert_close(model(**packed).loss, model(**padded, use_cache=False).loss, atol=1e-5, rtol=1e-5)


def test_truncation_keeps_whole_images_or_refuses():
    processor = make_tiny_next_processor()
    sample = LlavaCollator(processor).encode(row(0, SIZES[:2]))
    image_positions = [i for i, token in enumerate(sample.input_ids) if token == processor.image_token_id]
    first_end = image_positions[processor.num_image_tokens((48, 40)) - 1] + 1
    # a cut inside the second image's tokens (72 + 42 tokens here, not a multiple of either) is refused by name
    inside_second = image_positions[-1] - 5
    try:
        LlavaCollator(processor, max_length=inside_second).encode(row(0, SIZES[:2]))
        raise AssertionError("a cut through an image's tokens must be refused")
    except SampleError as error:
        assert "row-0" in str(error) and "cuts through an image" in str(error)
    # answer placed right after the first image: a cut after it keeps exactly one image
    short = row(0, SIZES[:1])
    short["messages"][0]["content"] = [{"type": "image"}, {"type": "text", "text": "?"}]
    long_sample = LlavaCollator(processor).encode(short)
    kept = LlavaCollator(processor, max_length=len(long_sample.input_ids) - 1).encode(short)
    assert len(kept.images) == 1 and kept.input_ids.count(processor.image_token_id) == first_end - image_positions[0]


def test_counts_follow_exif_rotation_and_undecoded_files(tmp_path):
    processor = make_tiny_next_processor()
    image = make_image(3, (100, 20))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: seen as 20 wide, 100 high
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif)
    assert image_size(str(path)) == (100, 20)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    assert image_size({"path": None, "bytes": buffer.getvalue()}) == (20, 100)
    collator = LlavaCollator(processor)
    opened = Image.open(path)
    assert collator.image_token_counts([opened]) == [processor.num_image_tokens((100, 20))]
    batch = collator([row(0, [(1, 1)]) | {"images": [opened]}])
    assert (batch["input_ids"] == processor.image_token_id).sum() == processor.num_image_tokens((100, 20))
    assert batch["image_sizes"].tolist() == [[100, 20]]


def test_preflight_counts_real_per_image_tokens(tmp_path):
    processor = make_tiny_next_processor()
    rows = [row(0, [(100, 20)]), row(1, [(64, 64), (64, 64)])]
    # undecoded files, as `datasets` hands them to the check
    for sample in rows:
        files = []
        for number, image in enumerate(sample["images"]):
            path = tmp_path / f"{sample['id']}-{number}.png"
            image.save(path)
            files.append({"path": str(path), "bytes": None})
        sample["images"] = files
    lengths = [len(LlavaCollator(processor).encode(sample).input_ids) for sample in rows]
    assert lengths[1] > lengths[0] + 2 * 88 - 42 - 10  # two 88-token images against one 42-token image
    report = check_rows(rows, processor, max_length=lengths[0])
    assert report.problems["too_long"] == [1] and report.bad_rows == {1}


def test_preflight_lengths_are_what_encode_builds_for_anyres_images():
    """The preflight's fast path (`encoded_lengths`, no per-token mask loop) gives each row exactly `encode`'s length,
    with every image expanded to its own size-dependent count."""
    collator = LlavaCollator(make_tiny_next_processor())
    rows = [row(0, SIZES[:2]), row(1, SIZES[2:5]), row(2, SIZES[5:])]
    assert collator.encoded_lengths(rows) == [len(collator.encode(sample).input_ids) for sample in rows]
