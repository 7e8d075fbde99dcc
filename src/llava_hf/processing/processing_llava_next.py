"""`LlavaHfNextProcessor`: LLaVA-1.6 (AnyRes) = `LlavaHfProcessor` with a token count per image size.

Pixels: transformers' built-in `LlavaNextImageProcessorPil` computes exactly what the original
`llava/mm_utils.py::process_anyres_image` computes (best pinpoint, aspect-preserving resize with `ceil`, black padding
centred with the same offsets, tiles, base image squashed to the tile size, CLIP normalisation; bit-identical over
the sizes in tests/processing/test_processing_llava_next.py), so it is used as is, pinned to its PIL backend (the
torchvision backend resizes with a different bicubic).

Tokens: each `<image>` becomes as many image tokens as the model makes features for an image of that size,
`p*p + H' * (W' + 1)` for "spatial_unpad" (base tile, then the unpadded grid map with one newline per row) or
`p*p * (1 + rows*cols)` for "flat", counted with the original's truncating unpad (the built-in `LlavaNextProcessor`
rounds to 7 digits first and counts two more rows or columns for some sizes; docs/llava_next.md).

On disk a "spatial_unpad" processor is transformers' own `LlavaNextProcessor` + `LlavaNextImageProcessor`, so plain
transformers loads it; "flat" (which the built-in cannot count) is saved as this class.
"""

from transformers import LlavaNextImageProcessorPil
from transformers.image_processing_utils import select_best_resolution
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from transformers.processing_utils import MultiModalData, ProcessorMixin

from .processing_llava import LlavaHfProcessor

PATCH_MERGE_TYPES = ("spatial_unpad", "flat")


def build_next_image_processor(
    image_size: int,
    image_grid_pinpoints: list,
    image_mean=tuple(OPENAI_CLIP_MEAN),
    image_std=tuple(OPENAI_CLIP_STD),
) -> LlavaNextImageProcessorPil:
    """AnyRes preprocessing for `image_size` px tiles and `image_grid_pinpoints` ([height, width] pairs)."""
    return LlavaNextImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_grid_pinpoints=[list(pinpoint) for pinpoint in image_grid_pinpoints],
        image_mean=list(image_mean),
        image_std=list(image_std),
        do_pad=True,
    )


def anyres_num_image_tokens(
    image_size: tuple[int, int], grid_pinpoints: list, tile_size: int, patches_per_side: int, merge_type: str
) -> int:
    """Features the LLaVA-1.6 model makes for an image of `image_size` (height, width), CLS dropped."""
    best_height, best_width = select_best_resolution(tuple(image_size), grid_pinpoints)
    rows, cols = best_height // tile_size, best_width // tile_size
    base = patches_per_side * patches_per_side
    if merge_type == "flat":
        return base * (1 + rows * cols)
    height, width = rows * patches_per_side, cols * patches_per_side  # the grid's feature map
    original_height, original_width = image_size
    # The original's unpad_image: scale the padded side by the other side's factor, truncate, crop evenly.
    if original_width / original_height > width / height:
        height -= 2 * ((height - int(original_height * (width / original_width))) // 2)
    else:
        width -= 2 * ((width - int(original_width * (height / original_height))) // 2)
    return base + height * (width + 1)


class LlavaHfNextProcessor(LlavaHfProcessor):
    """Tokenizer + AnyRes image processor for LLaVA-1.6.

    Args: those of `LlavaHfProcessor` (`patch_size`, `vision_feature_select_strategy` and
    `num_additional_image_tokens` as transformers' `LlavaNextProcessor` takes them), plus
        mm_patch_merge_type: the model config's "spatial_unpad" (released 1.6) or "flat".
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template: str | None = None,
        image_seq_length: int | None = None,
        image_token: str = "<image>",
        patch_size: int | None = None,
        vision_feature_select_strategy: str | None = None,
        num_additional_image_tokens: int | None = None,
        mm_patch_merge_type: str = "spatial_unpad",
        **kwargs,
    ):
        # Every argument is named: transformers passes a saved processor's settings only to named parameters.
        if mm_patch_merge_type not in PATCH_MERGE_TYPES:
            raise ValueError(f"mm_patch_merge_type={mm_patch_merge_type!r}; use one of {', '.join(PATCH_MERGE_TYPES)}.")
        if type(image_processor).__name__ == "LlavaNextImageProcessor":
            # The torchvision backend (what AutoImageProcessor loads when torchvision is installed): not the
            # original's bicubic. Same settings on the PIL backend.
            image_processor = LlavaNextImageProcessorPil(**image_processor.to_dict())
        self.mm_patch_merge_type = mm_patch_merge_type
        super().__init__(
            image_processor,
            tokenizer,
            chat_template=chat_template,
            image_seq_length=image_seq_length,
            image_token=image_token,
            patch_size=patch_size,
            vision_feature_select_strategy=vision_feature_select_strategy,
            num_additional_image_tokens=num_additional_image_tokens,
            **kwargs,
        )

    def num_image_tokens(self, image_size: tuple[int, int]) -> int:
        """Image tokens for one image of `image_size` (height, width)."""
        crop = self.image_processor.crop_size  # the tile size: every tile is cropped to it
        tile_size = crop["height"] if isinstance(crop, dict) else crop.height
        return anyres_num_image_tokens(
            image_size,
            self.image_processor.image_grid_pinpoints,
            tile_size,
            tile_size // self.patch_size,
            self.mm_patch_merge_type,
        )

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        size = image_inputs["image_sizes"][image_idx]
        size = size.tolist() if hasattr(size, "tolist") else size
        return self.image_token * self.num_image_tokens(size)

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholder tokens per image for images of `image_sizes` ((height, width) each), without processing them
        (the hook vLLM's Transformers backend calls); one entry of `pixel_values` per image, as the built-in says."""
        if image_sizes is None:
            return MultiModalData()
        return MultiModalData(
            num_image_tokens=[self.num_image_tokens(size) for size in image_sizes],
            num_image_patches=[1] * len(image_sizes),
        )

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Saves transformers' built-in `LlavaNextProcessor` for "spatial_unpad"; this class itself for "flat" or
        when its code ships with the checkpoint (`register_for_auto_class`)."""
        if self.mm_patch_merge_type != "spatial_unpad" or self._auto_class is not None:
            return ProcessorMixin.save_pretrained(self, save_directory, push_to_hub=push_to_hub, **kwargs)
        return self.to_builtin().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_builtin(self):
        """This processor as transformers' built-in `LlavaNextProcessor` with the PIL `LlavaNextImageProcessor`
        (same pixels; its token count rounds the unpad where the original truncates, see the module docstring)."""
        from transformers import LlavaNextProcessor

        if self.mm_patch_merge_type != "spatial_unpad":
            raise ValueError("transformers' LlavaNextProcessor counts 'spatial_unpad' tokens only, not 'flat'.")
        return self.as_builtin(LlavaNextProcessor, LlavaNextImageProcessorPil)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values", "image_sizes"]


__all__ = ["LlavaHfNextProcessor", "anyres_num_image_tokens", "build_next_image_processor", "PATCH_MERGE_TYPES"]
