"""The original LLaVA computation, written from its published facts (the LLaVA paper §4.1, the original `llava/mm_utils.py` and `llava/train/train.py`) without the original code.

Used by `llava-hf convert --verify` and the tests as the "source" side of a conversion check:
- `original_tokenizer_image_token`: the prompt split on the literal `<image>`, each chunk tokenized on its own by the
  slow SentencePiece `LlamaTokenizer` (so the chunk after the image gets SentencePiece's dummy-prefix "▁"), chunks
  joined by the placeholder id -200, one BOS at the start.
- `original_pixel_values`: "pad" = paste on a square of the integer mean colour, then CLIP resize/crop/normalise.
- `original_anyres_pixel_values` / `original_anyres_merge` (LLaVA-1.6, `llava/mm_utils.py::process_anyres_image` and
  `llava_arch.py`): the best (width, height) pinpoint, a `ceil` aspect-preserving resize pasted centred on black,
  row-major tiles after the whole image squashed to one tile; tile features laid out on the grid, the rows/columns of
  padding cut with `int()` truncation, the newline after every row ("spatial_unpad") or all tiles in order ("flat").
- `original_forward`: CLIP hidden state `mm_vision_select_layer`, drop CLS for "patch", the projector as
  `nn.Sequential(Linear, GELU, Linear, ...)` over the original `model.mm_projector.*` keys, splice the features where
  -200 sits, run a plain `LlamaForCausalLM` on the embeddings.
Nothing here imports llava_hf's model or processor, so a bug there cannot hide behind the same bug here.
"""

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

IMAGE_PLACEHOLDER_ID = -200  # the original's IMAGE_TOKEN_INDEX
SPIECE_UNDERLINE = "▁"


class OriginalSentencePieceTokenizer:
    """The slow `LlamaTokenizer` behaviour the original checkpoints were trained with, on top of `sentencepiece`.

    `legacy=True` (transformers' default before 4.31 and when the config has no `legacy` field): every text piece
    between special tokens gets the dummy prefix. `legacy=False`: only the start of the string does; a piece after a
    special token such as `</s>` is encoded without it (the "<unk>" trick transformers used, reproduced here).
    """

    def __init__(self, model_file: str | Path, legacy: bool = True, special_tokens=("<s>", "</s>", "<unk>")):
        import sentencepiece

        self.processor = sentencepiece.SentencePieceProcessor(model_file=str(model_file))
        self.legacy = legacy
        self.special_tokens = tuple(special_tokens)
        self.bos_token_id = self.processor.bos_id()
        self._unk_length = len(self.processor.encode("<unk>", out_type=str))

    def _split_special(self, text: str) -> list[str]:
        pieces = [text]
        for token in self.special_tokens:
            split = []
            for piece in pieces:
                if piece in self.special_tokens:
                    split.append(piece)
                    continue
                parts = piece.split(token)
                for index, part in enumerate(parts):
                    if index:
                        split.append(token)
                    split.append(part)
            pieces = split
        return [piece for piece in pieces if piece]

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [self.bos_token_id] if add_bos else []
        for index, piece in enumerate(self._split_special(text)):
            if piece in self.special_tokens:
                ids.append(self.processor.piece_to_id(piece))
            elif self.legacy or index == 0:
                ids.extend(self.processor.encode(piece))
            else:
                # legacy=False: encode "<unk>" + piece and drop the "<unk>" pieces, so no dummy prefix is added
                pieces = self.processor.encode("<unk>" + piece, out_type=str)[self._unk_length :]
                ids.extend(self.processor.piece_to_id(p) for p in pieces)
        return ids


def original_tokenizer_image_token(tokenizer: OriginalSentencePieceTokenizer, prompt: str) -> list[int]:
    """Ids as the original `tokenizer_image_token`: chunks tokenized separately, -200 between them, one BOS."""
    chunks = [tokenizer.encode(chunk) for chunk in prompt.split("<image>")]
    ids = list(chunks[0])
    for chunk in chunks[1:]:
        ids.append(IMAGE_PLACEHOLDER_ID)
        ids.extend(chunk[1:])  # every chunk was encoded with a BOS; only the first one keeps it
    return ids


def original_pixel_values(
    image: Image.Image, image_size: int, image_mean, image_std, image_aspect_ratio: str
) -> torch.Tensor:
    """LLaVA-1.5 preprocessing: optional pad-to-square with the integer mean colour, CLIP resize + crop + normalise."""
    image = image.convert("RGB")
    if image_aspect_ratio == "pad":
        width, height = image.size
        side = max(width, height)
        background = tuple(int(value * 255) for value in image_mean)  # (122, 116, 104) for CLIP
        canvas = Image.new("RGB", (side, side), background)
        canvas.paste(image, ((side - width) // 2, (side - height) // 2))
        image = canvas
    width, height = image.size
    # CLIPImageProcessor: shortest edge -> image_size, the long edge scaled and truncated (int), bicubic
    short, long = min(width, height), max(width, height)
    new_long = int(image_size * long / short)
    size = (new_long, image_size) if width >= height else (image_size, new_long)
    resized = image.resize(size, Image.Resampling.BICUBIC)
    left = (resized.width - image_size) // 2
    top = (resized.height - image_size) // 2
    cropped = resized.crop((left, top, left + image_size, top + image_size))
    array = np.asarray(cropped, dtype=np.float32) / 255.0
    array = (array - np.asarray(image_mean, dtype=np.float32)) / np.asarray(image_std, dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # [1, 3, H, W]


def original_projector(projector_state: dict[str, torch.Tensor], projector_type: str, features: torch.Tensor):
    """`model.mm_projector` as the original built it: Linear, or Sequential(Linear, GELU, Linear, ...), or identity."""
    if projector_type == "identity":
        return features
    if projector_type == "linear":
        return F.linear(
            features, projector_state["model.mm_projector.weight"], projector_state["model.mm_projector.bias"]
        )
    depth = int(projector_type[len("mlp") : -len("x_gelu")])
    hidden = features
    for index in range(depth):
        if index:
            hidden = F.gelu(hidden)
        weight = projector_state[f"model.mm_projector.{2 * index}.weight"]
        bias = projector_state[f"model.mm_projector.{2 * index}.bias"]
        hidden = F.linear(hidden, weight, bias)
    return hidden


def original_best_resolution(size: tuple[int, int], pinpoints: list) -> tuple[int, int]:
    """(width, height) of the pinpoint keeping most of the image's resolution, then wasting least; first on ties."""
    width, height = size
    best, best_kept, best_waste = None, -1, None
    for target_width, target_height in pinpoints:
        scale = min(target_width / width, target_height / height)
        kept = min(int(width * scale) * int(height * scale), width * height)
        waste = target_width * target_height - kept
        if kept > best_kept or (kept == best_kept and waste < best_waste):
            best, best_kept, best_waste = (target_width, target_height), kept, waste
    return best


def original_anyres_pixel_values(image: Image.Image, tile: int, pinpoints: list, image_mean, image_std) -> torch.Tensor:
    """LLaVA-1.6 tiles `[1 + rows*cols, 3, tile, tile]`: base (whole image squashed), then the grid row by row."""
    image = image.convert("RGB")
    target_width, target_height = original_best_resolution(image.size, pinpoints)
    if target_width / image.width < target_height / image.height:
        size = (target_width, min(math.ceil(image.height * target_width / image.width), target_height))
    else:
        size = (min(math.ceil(image.width * target_height / image.height), target_width), target_height)
    canvas = Image.new("RGB", (target_width, target_height), (0, 0, 0))
    canvas.paste(image.resize(size), ((target_width - size[0]) // 2, (target_height - size[1]) // 2))
    tiles = [image.resize((tile, tile))] + [
        canvas.crop((left, top, left + tile, top + tile))
        for top in range(0, target_height, tile)
        for left in range(0, target_width, tile)
    ]
    return torch.cat([original_pixel_values(part, tile, image_mean, image_std, "square") for part in tiles])


def original_anyres_merge(
    features: torch.Tensor, size: tuple[int, int], tile: int, pinpoints: list, merge: str, newline
) -> torch.Tensor:
    """Tile features `[tiles, p*p, D]` of an image of `size` (width, height) -> its `[tokens, D]` sequence."""
    if merge == "flat":
        return features.flatten(0, 1)
    side = math.isqrt(features.shape[1])
    target_width, target_height = original_best_resolution(size, pinpoints)
    rows, cols = target_height // tile, target_width // tile
    grid = features[1:].reshape(rows, cols, side, side, -1)
    feature_map = grid.permute(4, 0, 2, 1, 3).reshape(features.shape[-1], rows * side, cols * side)  # [D, H, W]
    width, height = size
    map_height, map_width = feature_map.shape[1:]
    if width / height > map_width / map_height:
        cut = (map_height - int(height * (map_width / width))) // 2
        feature_map = feature_map[:, cut : map_height - cut]
    else:
        cut = (map_width - int(width * (map_height / height))) // 2
        feature_map = feature_map[:, :, cut : map_width - cut]
    rows_with_newline = torch.cat([feature_map, newline[:, None, None].expand(-1, feature_map.shape[1], 1)], dim=-1)
    return torch.cat([features[0], rows_with_newline.flatten(1, 2).transpose(0, 1)])


@torch.no_grad()
def original_forward(
    language_model,
    vision_tower,
    projector_state: dict[str, torch.Tensor],
    projector_type: str,
    select_layer: int,
    select_feature: str,
    input_ids: list[int],
    pixel_values: torch.Tensor,
    merge=None,
) -> torch.Tensor:
    """Logits `[1, T, vocab]` of the original model for one prompt with one image (-200 marks the image).

    `pixel_values` is `[1, 3, H, W]`, or LLaVA-1.6's tiles with `merge` turning their features into the sequence.
    """
    hidden_states = vision_tower(pixel_values.to(vision_tower.dtype), output_hidden_states=True).hidden_states
    features = hidden_states[select_layer]  # [1, 1 + patches, D]
    if select_feature == "patch":
        features = features[:, 1:]
    projected = original_projector(projector_state, projector_type, features)  # [tiles, patches, hidden]
    image_embeds = projected[0] if merge is None else merge(projected)  # [image tokens, hidden]

    embed = language_model.get_input_embeddings()
    pieces, current = [], []
    for token in input_ids:
        if token == IMAGE_PLACEHOLDER_ID:
            if current:
                pieces.append(embed(torch.tensor(current)))
            pieces.append(image_embeds.to(embed.weight.dtype))
            current = []
        else:
            current.append(token)
    if current:
        pieces.append(embed(torch.tensor(current)))
    inputs_embeds = torch.cat(pieces, dim=0).unsqueeze(0)  # [1, T, hidden]
    return language_model(inputs_embeds=inputs_embeds).logits


__all__ = [
    "IMAGE_PLACEHOLDER_ID",
    "OriginalSentencePieceTokenizer",
    "original_anyres_merge",
    "original_anyres_pixel_values",
    "original_best_resolution",
    "original_forward",
    "original_pixel_values",
    "original_projector",
    "original_tokenizer_image_token",
]
