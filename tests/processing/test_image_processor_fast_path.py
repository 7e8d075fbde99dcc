"""LlavaHfImageProcessor: the fast path gives the original's pixel values, and a saved processor reloads as it."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, LlavaImageProcessorPil

from llava_hf import LlavaHfImageProcessor, LlavaHfProcessor, build_image_processor, to_rgb
from llava_hf.conversion.reference import original_pixel_values
from llava_hf.processing.image_processing_llava import _resize_padded_landscape
from llava_hf.testing import make_image


def builtin_twin(processor: LlavaHfImageProcessor) -> LlavaImageProcessorPil:
    """transformers' PIL-backend class with exactly the same settings (its generic, step-by-step path)."""
    settings = {key: value for key, value in processor.to_dict().items() if key != "image_processor_type"}
    return LlavaImageProcessorPil(**settings)


def photo_jpeg(width=640, height=480) -> Image.Image:
    """A decoded JPEG with smooth regions and edges, like the 640x480 photos LLaVA trains on."""
    y, x = np.mgrid[0:height, 0:width]
    array = np.stack([x * 255 // width, y * 255 // height, (x // 40 + y // 40) % 2 * 200], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


@pytest.fixture
def fast_path_calls(monkeypatch):
    calls = []
    original = LlavaHfImageProcessor._fast_preprocess

    def counting(self, images, **kwargs):
        calls.append(len(images))
        return original(self, images, **kwargs)

    monkeypatch.setattr(LlavaHfImageProcessor, "_fast_preprocess", counting)
    return calls


def test_640x480_jpeg_at_336_equals_the_original(fast_path_calls):
    image = photo_jpeg()
    processor = build_image_processor(336, "pad")
    ours = processor(image, return_tensors="pt")["pixel_values"]
    original = original_pixel_values(image, 336, processor.image_mean, processor.image_std, "pad")
    assert fast_path_calls == [1]
    assert ours.shape == original.shape == (1, 3, 336, 336) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, original, atol=0, rtol=0)  # bit-identical


@pytest.mark.parametrize("aspect", ["pad", "square"])
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (333, 333), (700, 3), (5, 90), (32, 31)])
def test_fast_path_equals_builtin_and_original(aspect, size, fast_path_calls):
    image = make_image(seed=size[0] + size[1], size=size)
    processor = build_image_processor(48, aspect)
    ours = processor(image, return_tensors="np")["pixel_values"]
    builtin = builtin_twin(processor)(image, return_tensors="np")["pixel_values"]
    original = original_pixel_values(image, 48, processor.image_mean, processor.image_std, aspect).numpy()
    assert fast_path_calls == [1]
    np.testing.assert_array_equal(ours, builtin)
    np.testing.assert_array_equal(ours, original)


def test_batch_of_mixed_sizes_is_one_stacked_array(fast_path_calls):
    images = [make_image(1, (64, 40)), make_image(2, (40, 64)), make_image(3, (50, 50))]
    processor = build_image_processor(32, "pad")
    ours = processor(images, return_tensors="pt")["pixel_values"]
    builtin = builtin_twin(processor)(images, return_tensors="pt")["pixel_values"]
    assert fast_path_calls == [3] and ours.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ours, builtin, atol=0, rtol=0)


@pytest.mark.parametrize(
    "images",
    [
        [Image.new("RGBA", (40, 30), (10, 20, 30, 128))],  # not RGB: the built-in's conversion applies
        [np.asarray(make_image(4, (40, 30)))],  # arrays are the built-in's business
        [make_image(5, (40, 30)), make_image(6, (40, 30), mode="L")],  # one non-RGB image sends the batch there
    ],
)
def test_other_inputs_take_the_builtin_path(images, fast_path_calls):
    processor = build_image_processor(32, "pad")
    ours = processor(images, return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(ours, builtin_twin(processor)(images, return_tensors="np")["pixel_values"])
    assert fast_path_calls == []


def test_per_call_overrides_are_honoured(fast_path_calls):
    image = make_image(7, (60, 40))
    processor = build_image_processor(32, "pad")
    kwargs = dict(do_normalize=False, size={"shortest_edge": 40}, crop_size={"height": 24, "width": 20})
    ours = processor(image, return_tensors="np", **kwargs)["pixel_values"]
    builtin = builtin_twin(processor)(image, return_tensors="np", **kwargs)["pixel_values"]
    assert fast_path_calls == [1] and ours.shape == (1, 3, 24, 20)
    np.testing.assert_array_equal(ours, builtin)


@pytest.mark.parametrize("resample", [Image.Resampling.BICUBIC, Image.Resampling.BILINEAR, Image.Resampling.LANCZOS])
def test_split_resize_is_pixel_identical_to_resizing_the_padded_canvas(resample):
    rng = np.random.default_rng(int(resample))
    for _ in range(40):
        width = int(rng.integers(8, 400))
        height = int(rng.integers(1, width))
        side = int(rng.integers(4, 300))
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        background = tuple(int(value) for value in rng.integers(0, 256, 3))
        canvas = Image.new("RGB", (width, width), background)
        canvas.paste(image, (0, (width - height) // 2))
        expected = np.asarray(canvas.resize((side, side), resample=resample))
        split = np.asarray(_resize_padded_landscape(image, background, (side, side), resample))
        np.testing.assert_array_equal(split, expected, err_msg=f"{width}x{height} -> {side}")


def test_saved_processor_is_the_builtin_one_and_reloads_as_ours(tmp_path, tokenizer):
    from transformers import LlavaImageProcessorPil

    image_processor = build_image_processor(32, "pad")
    LlavaHfProcessor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=16).save_pretrained(
        tmp_path
    )
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert (saved["processor_class"], saved["image_processor"]["image_processor_type"]) == (
        "LlavaProcessor",
        "LlavaImageProcessor",
    )
    # Plain transformers reads it with its own classes; backend="pil" is its exact one.
    assert type(AutoImageProcessor.from_pretrained(tmp_path, backend="pil")) is LlavaImageProcessorPil
    # llava_hf's class reads it back into the exact, fast image processor whichever backend transformers would pick.
    reloaded = LlavaHfProcessor.from_pretrained(tmp_path).image_processor
    assert type(reloaded) is LlavaHfImageProcessor and reloaded.to_dict() == image_processor.to_dict()
    image = make_image(8, (64, 48))
    original = original_pixel_values(image, 32, image_processor.image_mean, image_processor.image_std, "pad")
    torch.testing.assert_close(reloaded(image, return_tensors="pt")["pixel_values"], original, atol=1e-5, rtol=0)


def test_processor_saved_with_its_code_reloads_as_ours_for_either_backend(tmp_path, tokenizer):
    """The llava_hf format (what a checkpoint shipped with its code holds) names our classes; `import llava_hf`
    registers them, so the Auto classes give ours for either backend."""
    from transformers.processing_utils import ProcessorMixin

    image_processor = build_image_processor(32, "pad")
    processor = LlavaHfProcessor(image_processor=image_processor, tokenizer=tokenizer, image_seq_length=16)
    ProcessorMixin.save_pretrained(processor, tmp_path)  # the base class's save: this class as itself
    saved = json.loads((tmp_path / "processor_config.json").read_text())["image_processor"]
    assert saved["image_processor_type"] == "LlavaHfImageProcessor"
    # backend="torchvision" is what AutoImageProcessor picks by itself when torchvision is installed.
    for backend in ("torchvision", "pil", None):
        assert type(AutoImageProcessor.from_pretrained(tmp_path, backend=backend)) is LlavaHfImageProcessor
    reloaded = LlavaHfProcessor.from_pretrained(tmp_path)
    assert type(reloaded.image_processor) is LlavaHfImageProcessor and reloaded.image_seq_length == 16
    assert reloaded.image_processor.to_dict() == image_processor.to_dict()


def test_where_stock_preprocessing_differs_from_llava_hf(tokenizer):
    """The images transformers' own `LlavaImageProcessor` treats differently (docs/loading_everywhere.md): alpha is
    composited over white (LLaVA's `convert("RGB")` drops it), 16-bit greyscale is clipped (llava_hf scales it to
    8 bits) and EXIF orientation is ignored (llava_hf rotates). RGB and 8-bit greyscale are identical (equality with
    stock transformers: tests/test_loads_without_llava_hf.py)."""
    from transformers import LlavaImageProcessorPil

    processor = LlavaHfProcessor(
        image_processor=build_image_processor(32, "pad"), tokenizer=tokenizer, image_seq_length=16
    )
    stock = processor.to_builtin().image_processor
    assert type(stock) is LlavaImageProcessorPil

    def ours(image):
        return processor.image_processor(to_rgb(image), return_tensors="np")["pixel_values"]

    def theirs(image):
        return stock(image, return_tensors="np")["pixel_values"]

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8))
    for same in (rgb, rgb.convert("L"), rgb.convert("RGBA")):  # an opaque alpha channel changes nothing
        np.testing.assert_array_equal(ours(same), theirs(same))

    rgba = np.dstack([np.asarray(rgb), rng.integers(0, 256, (30, 50), dtype=np.uint8)])
    translucent = Image.fromarray(rgba, mode="RGBA")
    on_white = Image.alpha_composite(Image.new("RGBA", translucent.size, "white"), translucent)
    assert np.abs(ours(translucent) - theirs(translucent)).max() > 0.5
    np.testing.assert_array_equal(ours(translucent), theirs(translucent.convert("RGB")))  # LLaVA: alpha dropped
    np.testing.assert_allclose(theirs(translucent), ours(on_white), atol=0.02)  # stock: composited on white

    deep = Image.fromarray(rng.integers(0, 65536, (30, 50), dtype=np.uint16))
    assert deep.mode == "I;16"
    np.testing.assert_array_equal(theirs(deep), ours(deep.convert("RGB")))  # clipped at 255, like convert("RGB")
    assert np.abs(ours(deep) - theirs(deep)).max() > 0.5

    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    rgb.save(buffer, "JPEG", exif=exif)
    rotated = Image.open(buffer)
    as_stored = Image.fromarray(np.asarray(rotated))  # the same pixels without the EXIF tag
    np.testing.assert_array_equal(theirs(rotated), ours(as_stored))  # stock: the stored orientation
    assert ours(rotated).shape == theirs(rotated).shape and np.abs(ours(rotated) - theirs(rotated)).max() > 0.5
