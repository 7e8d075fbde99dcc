"""`LlavaHfNextConfig`: LLaVA-1.6 ("LLaVA-NeXT", AnyRes) = `LlavaHfConfig` + grid pinpoints + the patch merge.

LLaVA-1.6 sees an image as one base tile (the whole image squashed to the tower's size) plus the tiles of the image
resized and padded to the best of a few "grid pinpoints" (original `llava/mm_utils.py::process_anyres_image`). The
merge (`mm_patch_merge_type`) decides how the tiles' features become tokens: "spatial_unpad" (the released 1.6
models) lays the tiles out as one feature map, crops the rows/columns that only saw padding and ends every row with
the learned `image_newline`; "flat" concatenates base and tiles as they are.

Pinpoints are stored as (height, width), the order of transformers' built-in `LlavaNextConfig`; the original's
`image_grid_pinpoints` are (width, height) and the converter transposes them. On disk, a config the built-in can
express ("spatial_unpad", `mlp2x_gelu`) is the built-in's own `config.json` (`model_type: "llava_next"`); others keep
`model_type: "llava_hf_next"`. See docs/llava_next.md for where the built-in's answers differ from the original's.
"""

from typing import Literal

from huggingface_hub.dataclasses import strict

from .configuration_llava import BUILTIN_PROJECTOR_TYPE, LlavaHfConfig

# The pinpoints of the released LLaVA-1.6 checkpoints for a 336 px tower, (height, width): 1x2, 2x1, 2x2, 1x3, 3x1 tiles.
LLAVA_NEXT_GRID_PINPOINTS = [[672, 336], [336, 672], [672, 672], [336, 1008], [1008, 336]]
PATCH_MERGE_TYPES = ("spatial_unpad", "flat")
BUILTIN_NEXT_ARCHITECTURES = {
    "LlavaHfNextForConditionalGeneration": "LlavaNextForConditionalGeneration",
    "LlavaHfNextModel": "LlavaNextModel",
}


def grid_pinpoints_for(image_size: int) -> list[list[int]]:
    """The released 1.6 pinpoints scaled to a tower of `image_size` pixels (the tiny test towers use 32)."""
    return [[height * image_size // 336, width * image_size // 336] for height, width in LLAVA_NEXT_GRID_PINPOINTS]


@strict
class LlavaHfNextConfig(LlavaHfConfig):
    """Configuration of a LLaVA-1.6 (AnyRes) model: every `LlavaHfConfig` field, plus

    Args:
        image_grid_pinpoints: the tile layouts an image may be resized to, as [height, width] pixel pairs, each a
            multiple of the vision tower's `image_size` (default: the released 1.6 models' five, for 336 px).
        mm_patch_merge_type: "spatial_unpad" (released 1.6: unpad + `image_newline`) or "flat" (tiles concatenated).
        image_aspect_ratio: always "anyres" (base tile + grid tiles).
    """

    model_type = "llava_hf_next"

    image_grid_pinpoints: list | None = None
    mm_patch_merge_type: Literal["spatial_unpad", "flat"] = "spatial_unpad"
    image_aspect_ratio: Literal["anyres"] = "anyres"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        tile = self.vision_config.image_size
        if self.image_grid_pinpoints is None:
            self.image_grid_pinpoints = grid_pinpoints_for(tile)
        self.image_grid_pinpoints = [[int(height), int(width)] for height, width in self.image_grid_pinpoints]
        for height, width in self.image_grid_pinpoints:
            if height <= 0 or width <= 0 or height % tile or width % tile:
                raise ValueError(
                    f"image_grid_pinpoints entry [{height}, {width}] is not a whole number of {tile} px tiles; every "
                    f"pinpoint must be a positive multiple of the vision tower's image_size ({tile})."
                )
        if self.vision_feature_select_strategy != "default" or self.num_additional_image_tokens != 1:
            # The tiles' features are laid out as a patches_per_side x patches_per_side map: no CLS token in it.
            raise ValueError(
                "LLaVA-1.6 lays each tile's patch features out on a square grid, which needs a CLIP-style tower with a "
                "CLS token and vision_feature_select_strategy='default'."
            )

    @property
    def patches_per_side(self) -> int:
        """Patch features along one side of a tile (24 for CLIP-L/14 at 336 px)."""
        return self.vision_config.image_size // self.vision_config.patch_size

    @property
    def builtin_expressible(self) -> bool:
        """The built-in `LlavaNextForConditionalGeneration` always unpads with `image_newline` and builds
        Linear, act, Linear: "spatial_unpad" with `mlp2x_gelu` is what it can load."""
        return self.projector_type == BUILTIN_PROJECTOR_TYPE and self.mm_patch_merge_type == "spatial_unpad"

    @classmethod
    def from_builtin_dict(cls, config_dict: dict) -> dict:
        if config_dict.get("model_type") != "llava_next":
            return config_dict
        ours = {builtin: name for name, builtin in BUILTIN_NEXT_ARCHITECTURES.items()}
        config_dict = {
            **config_dict,
            "model_type": cls.model_type,
            "projector_type": BUILTIN_PROJECTOR_TYPE,
            "mm_patch_merge_type": "spatial_unpad",
        }
        if config_dict.get("architectures"):
            config_dict["architectures"] = [ours.get(name, name) for name in config_dict["architectures"]]
        return config_dict

    def to_builtin(self):
        """This config as transformers' built-in `LlavaNextConfig` (ValueError if it cannot express it)."""
        from transformers import LlavaNextConfig

        if not self.builtin_expressible:
            raise ValueError(
                f"projector_type={self.projector_type!r} with mm_patch_merge_type={self.mm_patch_merge_type!r} cannot "
                "be represented by transformers' LlavaNextForConditionalGeneration, which always builds "
                "Linear -> act -> Linear (mlp2x_gelu) and merges with 'spatial_unpad'."
            )
        fields = self.to_dict()
        for name in (
            "model_type",
            "projector_type",
            "transformers_version",
            "mm_patch_merge_type",
            "image_aspect_ratio",
        ):
            fields.pop(name, None)
        if fields.get("architectures"):
            fields["architectures"] = [BUILTIN_NEXT_ARCHITECTURES.get(name, name) for name in fields["architectures"]]
        return LlavaNextConfig(**fields)


__all__ = ["LlavaHfNextConfig", "LLAVA_NEXT_GRID_PINPOINTS", "PATCH_MERGE_TYPES", "grid_pinpoints_for"]
