"""LLaVA-1.6 ("LLaVA-NeXT", AnyRes; Liu et al. 2024, llava-vl.github.io/blog/2024-01-30-llava-next): LLaVA with
high-resolution tiles, top to bottom.

    image -> base tile (whole image squashed) + grid tiles (image resized and padded to the best pinpoint)
          -> vision tower on every tile -> drop CLS -> projector                       [tiles, p*p, D]
          -> "spatial_unpad": grid tiles laid out as one [D, rows*p, cols*p] map, the rows/columns that only saw
             padding cropped, `image_newline` appended to every row, base tile's features first
             "flat": base then grid tiles, as they are
          -> spliced at that image's tokens (the count depends on the image's size) -> causal LM -> lm_head

Everything else is LLaVA-1.5's (`modeling_llava.py`): towers, projector, splice, head, loss, checkpoint keys (plus
`image_newline`, a top-level key on disk, as in transformers' built-in LlavaNext). The arithmetic follows the
original `llava/mm_utils.py` and `llava/model/llava_arch.py` exactly, including its truncating unpad (the built-in
rounds to 7 digits first and keeps two more rows or columns for some sizes; docs/llava_next.md lists them).
"""

import math

import torch
from torch import nn
from transformers import initialization as init
from transformers.image_processing_utils import select_best_resolution
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_llava_next import LlavaHfNextConfig
from .modeling_llava import LlavaHfForConditionalGeneration, LlavaHfModel

# On disk the newline is a top-level key (transformers' built-in LlavaNext layout); in memory it lives in the backbone.
NEXT_CHECKPOINT_KEY_MAPPING = {r"^image_newline": "model.image_newline"}


def anyres_grid_shape(image_size: tuple[int, int], grid_pinpoints: list, tile_size: int) -> tuple[int, int]:
    """(rows, cols) of grid tiles for an image of `image_size` (height, width): the original's best pinpoint (the
    largest resolution the image keeps when scaled into it, then the least wasted area, first one on ties)."""
    best_height, best_width = select_best_resolution(tuple(image_size), grid_pinpoints)
    return best_height // tile_size, best_width // tile_size


def unpad_features(feature_map: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Crop a `[D, H, W]` feature map of the resized-and-padded image to the rows/columns the image covers.

    As the original `unpad_image`: the side that was padded is scaled by the other side's factor and truncated with
    `int()`, then the same number of rows (or columns) is dropped on both ends (so an odd remainder keeps one extra).
    """
    original_height, original_width = image_size
    current_height, current_width = feature_map.shape[1:]
    if original_width / original_height > current_width / current_height:
        new_height = int(original_height * (current_width / original_width))
        padding = (current_height - new_height) // 2
        return feature_map[:, padding : current_height - padding, :]
    new_width = int(original_width * (current_height / original_height))
    padding = (current_width - new_width) // 2
    return feature_map[:, :, padding : current_width - padding]


def init_image_newline(module: nn.Module):
    """N(0, 1/sqrt(hidden)) for a backbone's `image_newline`, as the original draws it (llava_arch.py)."""
    if isinstance(module, LlavaHfNextModel) and module.image_newline is not None:
        init.normal_(module.image_newline, mean=0.0, std=1 / math.sqrt(module.config.text_config.hidden_size))


class LlavaHfNextModel(LlavaHfModel):
    """LLaVA-1.5's backbone + AnyRes: `pixel_values` hold each image's tiles, `image_sizes` its (height, width)."""

    config_class = LlavaHfNextConfig

    def __init__(self, config: LlavaHfNextConfig):
        super().__init__(config)
        hidden = config.text_config.hidden_size
        self.image_newline = (
            nn.Parameter(torch.randn(hidden, dtype=self.dtype) / math.sqrt(hidden))
            if config.mm_patch_merge_type == "spatial_unpad"
            else None
        )

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        init_image_newline(module)

    def tiles_per_image(self, image_sizes: torch.Tensor | list) -> list[int]:
        """1 base tile + rows x cols grid tiles for each (height, width)."""
        tile = self.config.vision_config.image_size
        sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else image_sizes
        return [math.prod(anyres_grid_shape(size, self.config.image_grid_pinpoints, tile)) + 1 for size in sizes]

    def get_image_features(
        self,
        pixel_values: torch.Tensor | list[torch.Tensor],
        image_sizes: torch.Tensor | list | None = None,
        vision_feature_layer: int | list[int] | None = None,
        vision_feature_select_strategy: str | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling | tuple:
        """As `LlavaHfModel.get_image_features`, with `pooler_output` = one `[tokens_i, D]` tensor per image.

        `pixel_values`: `[num_images, max_tiles, 3, H, W]` (the processor's batch, zero tiles after each image's own),
        a list of `[tiles_i, 3, H, W]`, or all tiles concatenated `[sum tiles_i, 3, H, W]`.
        """
        if image_sizes is None:
            raise ValueError(
                "LLaVA-1.6 needs image_sizes ((height, width) per image) with pixel_values; the processor returns both."
            )
        tiles = self.tiles_per_image(image_sizes)
        if isinstance(pixel_values, (list, tuple)):
            pixel_values = torch.cat(list(pixel_values))
        elif pixel_values.dim() == 5:
            pixel_values = torch.cat([image_tiles[:count] for image_tiles, count in zip(pixel_values, tiles)])
        if pixel_values.shape[0] != sum(tiles):
            raise ValueError(
                f"pixel_values hold {pixel_values.shape[0]} tiles but image_sizes {image_sizes} need {tiles} (base + "
                "grid tiles per image); pass the processor's pixel_values and image_sizes together."
            )
        return_dict = kwargs.pop("return_dict", None)
        return_dict = self.config.return_dict if return_dict is None else return_dict
        outputs = super().get_image_features(
            pixel_values,
            vision_feature_layer=vision_feature_layer,
            vision_feature_select_strategy=vision_feature_select_strategy,
            return_dict=True,
            **kwargs,
        )
        per_tile = torch.stack(outputs.pooler_output)  # [sum tiles_i, p*p, D]
        sizes = image_sizes.tolist() if isinstance(image_sizes, torch.Tensor) else list(image_sizes)
        outputs.pooler_output = self.pack_image_features(per_tile.split(tiles), sizes)
        return outputs if return_dict else outputs.to_tuple()

    def pack_image_features(self, tile_features: list[torch.Tensor], image_sizes: list) -> list[torch.Tensor]:
        """Each image's `[tiles, p*p, D]` tile features as its `[tokens, D]` sequence (see the module docstring)."""
        if self.config.mm_patch_merge_type == "flat":
            return [features.flatten(0, 1) for features in tile_features]
        side = self.config.patches_per_side
        tile = self.config.vision_config.image_size
        packed = []
        for features, size in zip(tile_features, image_sizes):
            base, grid = features[0], features[1:]  # [p*p, D], [rows*cols, p*p, D]
            rows, cols = anyres_grid_shape(size, self.config.image_grid_pinpoints, tile)
            grid = grid.view(rows, cols, side, side, -1)  # [rows, cols, p, p, D]
            feature_map = grid.permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # [D, rows*p, cols*p]
            feature_map = unpad_features(feature_map, size)  # [D, H', W']
            newline = self.image_newline[:, None, None].expand(-1, feature_map.shape[1], 1).to(feature_map)
            feature_map = torch.cat((feature_map, newline), dim=-1)  # [D, H', W' + 1]
            packed.append(torch.cat((base, feature_map.flatten(1, 2).transpose(0, 1))))  # [p*p + H'(W'+1), D]
        return packed


class LlavaHfNextForConditionalGeneration(LlavaHfForConditionalGeneration):
    """LLaVA-1.6 with the LM head: `forward(input_ids, pixel_values, image_sizes, ...)` as LLaVA-1.5's plus sizes."""

    config_class = LlavaHfNextConfig
    backbone_class = LlavaHfNextModel

    def _init_weights(self, module: nn.Module):
        super()._init_weights(module)
        init_image_newline(module)


__all__ = [
    "NEXT_CHECKPOINT_KEY_MAPPING",
    "LlavaHfNextForConditionalGeneration",
    "LlavaHfNextModel",
    "anyres_grid_shape",
    "unpad_features",
]
