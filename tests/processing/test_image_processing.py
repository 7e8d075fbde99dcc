"""LLaVA image preprocessing against hand-computed values (the original `llava/mm_utils.py`: `expand2square`, `process_images`) and each kind of input image."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from llava_hf import build_image_processor, to_rgb
from llava_hf.testing import make_image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])


def normalised(rgb) -> np.ndarray:
    """CLIP normalisation of one 8-bit RGB colour, computed by hand."""
    return (np.asarray(rgb) / 255.0 - MEAN) / STD


def reference_llava(image: Image.Image, size: int, pad: bool) -> np.ndarray:
    """LLaVA-1.5's preprocessing written from the original `llava/mm_utils.py`: `expand2square`, `process_images` with PIL only: expand2square, resize, crop, normalise."""
    image = image.convert("RGB")
    if pad:
        side = max(image.size)
        canvas = Image.new("RGB", (side, side), (122, 116, 104))
        canvas.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = canvas
    scale = size / min(image.size)
    resized = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    cropped = np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.float64)
    return ((cropped / 255.0 - MEAN) / STD).transpose(2, 0, 1)


def test_pad_fills_with_truncated_mean_colour_and_centres_the_image():
    processor = build_image_processor(32, "pad")
    wide = Image.new("RGB", (64, 16), (255, 0, 0))  # padded to 64x64: rows 24..39 red, the rest mean colour
    pixels = processor(wide, return_tensors="np")["pixel_values"][0]  # [3, 32, 32] after resizing 64 -> 32
    np.testing.assert_allclose(pixels[:, 0, 5], normalised((122, 116, 104)), atol=1e-6)
    np.testing.assert_allclose(pixels[:, 31, 5], normalised((122, 116, 104)), atol=1e-6)
    np.testing.assert_allclose(pixels[:, 16, 5], normalised((255, 0, 0)), atol=1e-6)
    assert pixels.shape == (3, 32, 32)


def test_square_resizes_the_short_side_and_centre_crops():
    processor = build_image_processor(32, "square")
    image = Image.new("RGB", (96, 32), (0, 0, 255))
    image.paste((0, 255, 0), (0, 0, 32, 32))  # left third green: cropped away by the centre crop
    pixels = processor(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(pixels[:, 16, 16], normalised((0, 0, 255)), atol=1e-6)
    np.testing.assert_allclose(pixels[:, 0, 0], normalised((0, 0, 255)), atol=0.05)


@pytest.mark.parametrize("pad", [True, False])
@pytest.mark.parametrize("size", [(40, 48), (48, 40), (33, 33), (100, 7)])
def test_matches_reference_pipeline(pad, size):
    image = make_image(seed=size[0], size=size)
    ours = build_image_processor(32, "pad" if pad else "square")(image, return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(ours, reference_llava(image, 32, pad), atol=1e-5)


def test_aspect_ratio_is_validated():
    with pytest.raises(ValueError, match="anyres"):
        build_image_processor(32, "anyres")


def test_rgba_drops_alpha_like_the_original():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (10, 20, 30)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.new("L", (4, 4), 77), (77, 77, 77)),
        (Image.new("LA", (4, 4), (77, 0)), (77, 77, 77)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), (255, 0, 0)),
        (Image.new("I;16", (4, 4), 65535), (255, 255, 255)),
        (Image.new("I;16", (4, 4), 32896), (128, 128, 128)),
        (Image.new("I", (4, 4), 257 * 40), (40, 40, 40)),
        (Image.new("F", (4, 4), 0.5), (128, 128, 128)),
    ],
)
def test_colour_modes(image, expected):
    converted = to_rgb(image)
    assert converted.mode == "RGB" and converted.getpixel((1, 1)) == expected


def test_palette_image():
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    assert to_rgb(palette).getpixel((0, 0)) == (200, 100, 50)


def test_exif_rotation_is_applied():
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif.tobytes(), quality=100)
    rotated = to_rgb(Image.open(buffer))
    assert rotated.size == (20, 40)
    top_red, top_green, top_blue = rotated.getpixel((10, 2))
    assert top_blue > 200 and top_red < 60  # the left strip is now on top


def test_sixteen_bit_png_from_disk(tmp_path):
    array = np.full((8, 8), 65535, dtype=np.uint16)
    array[:4] = 0
    path = tmp_path / "sixteen.png"
    Image.fromarray(array).save(path)
    converted = to_rgb(Image.open(path))
    assert converted.getpixel((0, 0)) == (0, 0, 0) and converted.getpixel((0, 7)) == (255, 255, 255)


def test_processor_accepts_single_list_and_nested_images(processor):
    one = make_image(1)
    single = processor(images=one, text="<image>hi", return_tensors="pt")
    flat = processor(images=[one, make_image(2)], text=["<image>a", "<image>b"], padding=True, return_tensors="pt")
    nested = processor(
        images=[[one], [make_image(2), make_image(3)]],
        text=["<image>a", "<image><image>b"],
        padding=True,
        return_tensors="pt",
    )
    assert single.pixel_values.shape == (1, 3, 32, 32)
    assert flat.pixel_values.shape[0] == 2 and nested.pixel_values.shape[0] == 3
    torch.testing.assert_close(single.pixel_values[0], nested.pixel_values[0])


def test_processor_converts_rgba_like_llava(processor):
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 0))
    pixels = processor(images=rgba, text="<image>", return_tensors="np")["pixel_values"][0]
    np.testing.assert_allclose(pixels[:, 5, 5], normalised((10, 20, 30)), atol=1e-6)
