"""LLaVA's image preprocessing (the original `llava/mm_utils.py`: `expand2square`, `process_images`): `LlavaHfImageProcessor`, exact and fast.

The original (`llava/mm_utils.py::process_images` with `image_aspect_ratio="pad"`) pastes the image centred on a square
of side max(w, h) filled with the truncated mean colour (122, 116, 104) (`expand2square`), then runs transformers 4.31's
slow `CLIPImageProcessor`: PIL bicubic resize of the shortest edge to 336, centre crop 336, x/255, (x - mean) / std.
transformers 5's built-in `LlavaImageProcessorPil` computes the same numbers but converts to NumPy and back per step
(about 11 ms per 640x480 image on one thread); its torchvision backend is faster but resizes with torch's
antialiased bicubic, which is not PIL's and moves pixel values by up to ~0.1 after normalisation.

`LlavaHfImageProcessor` keeps the built-in's settings, saved format and fallbacks, and takes a fast path for RGB PIL
images: paste once into the padded canvas, one C-level PIL resize straight to the output size (a padded square
needs no crop), and one table lookup from uint8 to the normalised float32 batch. Bit-identical to the original;
see benchmarks/bench_preprocessing.py for the speed.

What the built-in also lacks is the original's colour handling: LLaVA opens every image with
`PIL.Image.open(path).convert("RGB")`, which drops alpha (the built-in composites it over white), and 16-bit or
EXIF-rotated files need care `convert` does not take. `to_rgb` does that part.
"""

import numpy as np
from PIL import Image, ImageOps
from transformers import BatchFeature, LlavaImageProcessorPil
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

IMAGE_ASPECT_RATIOS = ("pad", "square")

# PIL modes holding more than 8 bits per sample: `Image.convert("RGB")` clips them to 255 instead of scaling.
HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of `image` the way LLaVA sees it, upright.

    - EXIF orientation is applied first, so a phone photo is seen as it is displayed.
    - 16/32-bit and float greyscale are scaled to 0..255 (16-bit: value / 257, so 65535 -> 255).
    - Everything else goes through `convert("RGB")` exactly like the original: alpha is dropped, not composited,
      palette/LA/L/CMYK use PIL's conversions.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(
            f"expected a PIL.Image.Image, got {type(image).__name__}; open files with PIL.Image.open first."
        )
    image = ImageOps.exif_transpose(image)
    if image.mode in HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        if image.mode == "F":
            scaled = np.clip(values, 0.0, 1.0) * 255.0 if values.max(initial=0.0) <= 1.0 else np.clip(values, 0, 255)
        else:
            scaled = np.clip(values, 0, 65535) / 257.0
        image = Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")
    return image if image.mode == "RGB" else image.convert("RGB")


def _resize_padded_landscape(
    image: Image.Image, background: tuple[int, int, int], new_size: tuple[int, int], resample: int
) -> Image.Image:
    """`expand2square(image).resize(new_size)` for a wide image, pixel for pixel, without resampling the padding.

    PIL resizes in two passes, horizontal then vertical, through a uint8 intermediate, and each row of the horizontal
    pass depends only on the same input row. So the horizontal pass runs on the image rows alone, the padding rows
    of the intermediate are copies of one resized background row, and the vertical pass is PIL's own resize of that
    intermediate: a quarter less resampling for 640x480, and no side x side canvas to fill and paste into.
    """
    width, height = image.size  # width > height: the padding goes above and below
    new_width, new_height = new_size
    rows = image.resize((new_width, height), resample=resample)  # horizontal pass only
    background_row = Image.new("RGB", (width, 1), background).resize((new_width, 1), resample=resample)
    intermediate = background_row.resize((new_width, width), resample=Image.Resampling.NEAREST)  # row copies
    intermediate.paste(rows, (0, (width - height) // 2))
    return intermediate.resize((new_width, new_height), resample=resample)  # vertical pass only


class LlavaHfImageProcessor(LlavaImageProcessorPil):
    """transformers' `LlavaImageProcessorPil` (same settings, same saved JSON) with a fast path for RGB PIL images.

    Saved on its own as `"image_processor_type": "LlavaHfImageProcessor"`, which `llava_hf.register_auto_classes()`
    (run on the first use of the package's classes) registers for both of `AutoImageProcessor`'s backends: such a
    processor reloads as this class whether or not torchvision is installed, so its numbers stay the original's (the
    torchvision backend's bicubic differs from PIL's). `LlavaHfProcessor` saves it under the built-in's name, so
    stock transformers reads it.
    """

    def _preprocess_image_like_inputs(self, images, *args, **kwargs) -> BatchFeature:
        flat = self._prepare_images_structure(images)
        if not args and self._takes_fast_path(flat, **kwargs):
            return self._fast_preprocess(flat, **kwargs)
        return super()._preprocess_image_like_inputs(images, *args, **kwargs)

    @staticmethod
    def _takes_fast_path(
        images, do_resize=None, size=None, resample=None, do_center_crop=None, crop_size=None, **kwargs
    ) -> bool:
        """True when every image is an RGB PIL image and the settings are CLIP's resize-shortest-edge + centre crop."""
        return (
            len(images) > 0
            and all(isinstance(image, Image.Image) and image.mode == "RGB" for image in images)
            and bool(do_resize)
            and bool(size.shortest_edge)
            and not size.longest_edge
            and isinstance(resample, int)
            and bool(do_center_crop)
            and crop_size.height is not None
            and crop_size.height <= size.shortest_edge
            and crop_size.width <= size.shortest_edge
        )

    def _fast_preprocess(
        self,
        images: list[Image.Image],
        size,
        resample: int,
        crop_size,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        do_pad: bool,
        return_tensors=None,
        **kwargs,
    ) -> BatchFeature:
        """pad -> resize -> centre crop -> rescale + normalise, the built-in's steps in the same order and arithmetic.

        Rescale and normalise become one table lookup per channel: a uint8 pixel has 256 values, and the table holds
        exactly what the original computes for each (`float32(x * rescale_factor)`, then `(x - mean) / std` in
        float32, as transformers 4.31's `rescale` and `normalize` do), so the output is bit-identical to it.
        """
        channels = 3
        values = np.arange(256) * (rescale_factor if do_rescale else 1.0)  # float64, as uint8 * Python float
        table = np.repeat(values.astype(np.float32)[None], channels, axis=0)  # [3, 256]
        if do_normalize:
            mean = np.broadcast_to(np.asarray(image_mean, dtype=np.float32), channels)
            std = np.broadcast_to(np.asarray(image_std, dtype=np.float32), channels)
            table = (table - mean[:, None]) / std[:, None]
        # CLIP's padding colour: the mean colour truncated to integers, as the original's expand2square gets it.
        background = tuple(int(value * 255) for value in image_mean) if image_mean is not None else (0, 0, 0)

        crop_height, crop_width = crop_size.height, crop_size.width
        pixel_values = np.empty((len(images), channels, crop_height, crop_width), dtype=np.float32)  # [N, 3, H, W]
        for index, image in enumerate(images):
            width, height = image.size
            if do_pad and width != height:
                side = max(width, height)
                new_size = (size.shortest_edge, size.shortest_edge)
                if width > height and resample != Image.Resampling.NEAREST:
                    image = _resize_padded_landscape(image, background, new_size, resample)
                else:
                    canvas = Image.new("RGB", (side, side), background)
                    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
                    image = canvas.resize(new_size, resample=resample)
            else:
                # Shortest edge -> size.shortest_edge, the long edge scaled and truncated (transformers'
                # get_resize_output_image_size with default_to_square=False); PIL resize without reducing_gap.
                short, long = min(width, height), max(width, height)
                new_short, new_long = size.shortest_edge, int(size.shortest_edge * long / short)
                new_size = (new_short, new_long) if width <= height else (new_long, new_short)  # PIL: (width, height)
                if new_size != (width, height):
                    image = image.resize(new_size, resample=resample)
            pixels = np.asarray(image)  # [H, W, 3] uint8
            top, left = (new_size[1] - crop_height) // 2, (new_size[0] - crop_width) // 2
            pixels = pixels[top : top + crop_height, left : left + crop_width]
            for channel in range(channels):
                np.take(table[channel], pixels[:, :, channel], out=pixel_values[index, channel])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)


def build_image_processor(
    image_size: int = 336,
    image_aspect_ratio: str = "pad",
    image_mean: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN),
    image_std: tuple[float, float, float] = tuple(OPENAI_CLIP_STD),
) -> "LlavaHfImageProcessor":
    """CLIP preprocessing at `image_size`, with LLaVA-1.5's mean-colour padding when `image_aspect_ratio="pad"`."""
    if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
        raise ValueError(
            f"image_aspect_ratio={image_aspect_ratio!r} is not supported; use 'pad' (LLaVA-1.5) or 'square' (LLaVA v1). "
            "AnyRes ('anyres') needs a LLaVA-NeXT style model."
        )
    return LlavaHfImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_pad=image_aspect_ratio == "pad",
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


__all__ = ["LlavaHfImageProcessor", "to_rgb", "build_image_processor", "IMAGE_ASPECT_RATIOS"]
