"""LLaVA's image preprocessing (LLAVA.md §2) on top of transformers' built-in `LlavaImageProcessor`.

The built-in processor already does CLIP's resize/crop/normalise and, with `do_pad=True`, LLaVA-1.5's "pad" (centre
the image on a square of side max(w, h) filled with the truncated mean colour (122, 116, 104)). What it lacks is the
original's colour handling: LLaVA opens every image with `PIL.Image.open(path).convert("RGB")`, which drops alpha
(the built-in composites it over white), and 16-bit or EXIF-rotated files need care `convert` does not take.
`to_rgb` does that part; `build_image_processor` configures the built-in class for "pad" or "square".
"""

import numpy as np
from PIL import Image, ImageOps
from transformers import LlavaImageProcessorPil
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


def build_image_processor(
    image_size: int = 336,
    image_aspect_ratio: str = "pad",
    image_mean: tuple[float, float, float] = tuple(OPENAI_CLIP_MEAN),
    image_std: tuple[float, float, float] = tuple(OPENAI_CLIP_STD),
) -> LlavaImageProcessorPil:
    """CLIP preprocessing at `image_size`, with LLaVA-1.5's mean-colour padding when `image_aspect_ratio="pad"`.

    The PIL backend is used because it reproduces the original (transformers' slow CLIPImageProcessor) exactly;
    a checkpoint saved with it reloads through `AutoProcessor`, which picks the torchvision backend where installed.
    """
    if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
        raise ValueError(
            f"image_aspect_ratio={image_aspect_ratio!r} is not supported; use 'pad' (LLaVA-1.5) or 'square' (LLaVA v1). "
            "AnyRes ('anyres') needs a LLaVA-NeXT style model."
        )
    return LlavaImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_pad=image_aspect_ratio == "pad",
        image_mean=list(image_mean),
        image_std=list(image_std),
    )


__all__ = ["to_rgb", "build_image_processor", "IMAGE_ASPECT_RATIOS"]
