# git -C LLaVA archive HEAD llava | tar -x -C ORIGINAL_DIR      (LLaVA = a clone of github.com/haotian-liu/LLaVA)
# python tests/assets/make_llava_next_reference.py ORIGINAL_DIR   (rewrites tests/assets/llava_next/)
"""Reference outputs of the original LLaVA-1.6 code, run as is, for tests/modeling/test_llava_next_parity.py.

ORIGINAL_DIR holds the original repository's `llava/` package (the fixtures were made from commit c121f04). Its
`__init__` files import the language-model classes, which need transformers 4.37; only `llava/mm_utils.py` and
`llava/model/llava_arch.py` (+ `constants.py`, the CLIP tower and projector builders) are executed here, through empty
parent packages, and they import with transformers 5. Nothing of them is copied into llava_hf.

What runs: the tiny LLaVA-1.6 of `llava_hf.testing.make_tiny_next_model` (seed 0; CLIP 32 px tiles, patch 8) has its
weights put into the original's modules (a saved `CLIPVisionModel` folder loaded by the original `CLIPVisionTower`,
`build_vision_projector` for mlp2x_gelu, `image_newline`, the tiny Llama), and for each test image the original
- `process_anyres_image` gives the pixel tensor (CLIP preprocessing by transformers' PIL `CLIPImageProcessor`), also
  for a few images at the released geometry (336 px tiles, the five pinpoints),
- `prepare_inputs_labels_for_multimodal` (`image_aspect_ratio="anyres"`, `mm_patch_merge_type` "spatial_unpad" and
  "flat") gives `inputs_embeds` for prompts whose image placeholders are the original's -200,
- a `LlamaForCausalLM` with the tiny model's LM weights gives the logits.
Token counts over many image sizes come from the same `prepare_inputs_labels_for_multimodal`, with the tile features
replaced by zeros (the count does not depend on them), for the tiny config and for the released 1.6 config (336 px
tiles, patch 14, five pinpoints), so no real-size tower is needed.

Written: `llava_next/reference.safetensors` (inputs_embeds, the last logits rows, input ids) and
`llava_next/reference.json` (shape + SHA-256 of every pixel tensor, sizes -> token counts, and the sizes where
transformers' built-in LlavaNext counts differ).
"""

import hashlib
import json
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from safetensors.torch import save_file

OUT_DIR = Path(__file__).parent / "llava_next"
LOGIT_ROWS = 8  # the last positions' logits are stored (they depend on every earlier input)
IMAGE_PLACEHOLDER = -200  # the original's IMAGE_TOKEN_INDEX
REAL_TILE, REAL_PATCH = 336, 14
REAL_PINPOINTS_WH = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]  # liuhaotian/llava-v1.6-*

# (width, height) of the images run through the whole model: ordinary, tiny, 1xN / Nx1, huge aspect ratios, square,
# and sizes whose unpadding the built-in rounds differently (found below).
FORWARD_SIZES = [(40, 48), (100, 20), (20, 100), (1, 1), (1, 300), (300, 1), (64, 64), (33, 95), (97, 31), (47, 188)]
FLAT_FORWARD = 4
# (width, height) of images preprocessed at the released geometry (336 px tiles): pixel digests only.
REAL_PIXEL_SIZES = [
    (640, 480),
    (47, 1128),
    (88, 55),
    (1000, 999),
    (1, 40),
    (300, 1),
    (33, 65),
    (1500, 200),
]  # "flat" (no unpadding) runs the first four only: its sequences are long and its layout simple
PROMPTS = [  # text around each image; one prompt holds two images (multi-image)
    ("USER: ", "\nWhat is this? ASSISTANT:"),
    ("A chat. USER: ", "\nDescribe it. ASSISTANT: It is"),
]


def load_original(original_dir: Path):
    """The original's `llava.mm_utils` and `llava.model.llava_arch`, without running the package `__init__`s."""
    sys.path.insert(0, str(original_dir))
    for name in ("llava", "llava.model"):
        package = types.ModuleType(name)
        package.__path__ = [str(original_dir / name.replace(".", "/"))]
        sys.modules[name] = package
    import llava.mm_utils as mm_utils
    import llava.model.llava_arch as llava_arch
    from llava.model.multimodal_projector.builder import build_vision_projector

    return mm_utils, llava_arch, build_vision_projector


def original_config(tower_folder: Path, text_config, merge: str, pinpoints_wh) -> SimpleNamespace:
    return SimpleNamespace(
        mm_vision_tower=str(tower_folder),
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_projector_type="mlp2x_gelu",
        mm_hidden_size=None,
        hidden_size=text_config.hidden_size,
        mm_patch_merge_type=merge,
        image_aspect_ratio="anyres",
        image_grid_pinpoints=pinpoints_wh,
        tune_mm_mlp_adapter=False,
        mm_use_im_start_end=False,
        tokenizer_padding_side="right",
    )


def build_original(llava_arch, build_vision_projector, model, config, tower_folder: Path):
    """The original `LlavaMetaForCausalLM` over the tiny model's weights (the original's own tower class)."""
    from llava.model.multimodal_encoder.builder import build_vision_tower

    class Backbone(torch.nn.Module):
        get_vision_tower = llava_arch.LlavaMetaModel.get_vision_tower

        def __init__(self):
            super().__init__()
            config.mm_hidden_size = model.config.vision_config.hidden_size
            self.vision_tower = build_vision_tower(config)
            self.mm_projector = build_vision_projector(config)
            ours = model.model.multi_modal_projector
            self.mm_projector[0].load_state_dict(ours.linear_1.state_dict())
            self.mm_projector[2].load_state_dict(ours.linear_2.state_dict())
            if model.model.image_newline is not None:
                self.image_newline = torch.nn.Parameter(model.model.image_newline.detach().clone())
            self.embed_tokens = model.model.language_model.embed_tokens

    class Original(llava_arch.LlavaMetaForCausalLM):
        def __init__(self):
            self.config = config
            self.model = Backbone()
            self.device = torch.device("cpu")

        def get_model(self):
            return self.model

    return Original()


def original_lm(model):
    from transformers import LlamaForCausalLM

    lm = LlamaForCausalLM(model.config.text_config).eval()
    lm.model.load_state_dict(model.model.language_model.state_dict())
    lm.lm_head.load_state_dict(model.lm_head.state_dict())
    return lm


def pixel_digest(pixels: torch.Tensor) -> dict:
    """Shape + SHA-256 of the float32 bytes: equal digests = bit-identical pixel tensors, in a few bytes."""
    data = pixels.float().contiguous().numpy().tobytes()
    return {"shape": list(pixels.shape), "sha256": hashlib.sha256(data).hexdigest()}


def count_sizes(mm_utils, llava_arch, tile: int, patches: int, pinpoints_wh, limit: int) -> tuple[list, list]:
    """Sizes to count: extremes, every size up to `limit` where the built-in's rounding changes the unpadded grid
    (by brute force), and seeded random sizes. Returns (sizes, the rounding sizes among them)."""
    from transformers.models.llava_next.modeling_llava_next import unpad_image as builtin_unpad

    rounding = []
    for width in range(1, limit):
        for height in range(1, limit):
            grid_width, grid_height = mm_utils.get_anyres_image_grid_shape((width, height), pinpoints_wh, tile)
            shape = torch.empty(0, grid_height * patches, grid_width * patches)
            original = llava_arch.unpad_image(shape, (width, height)).shape
            if original != builtin_unpad(shape, (height, width)).shape:
                rounding.append((width, height))
    extremes = [(1, 1), (1, 2), (2, 1), (1, 10000), (10000, 1), (3, 4000), (4000, 3), (2, 9999), (16383, 7)]
    extremes += [(tile, tile), (tile - 1, tile + 1), (2 * tile, tile), (tile, 3 * tile), (3 * tile + 1, tile - 1)]
    rng = np.random.default_rng(1234)
    random_sizes = [tuple(int(v) for v in rng.integers(1, 2 * limit, 2)) for _ in range(150)]
    random_sizes += [(int(w), int(w * r)) for w, r in zip(rng.integers(1, limit, 40), rng.uniform(0.05, 20, 40))]
    sizes = list(dict.fromkeys(extremes + rounding[:60] + [(w, max(h, 1)) for w, h in random_sizes]))
    return sizes, [size for size in rounding if size in sizes]


def original_counts(original, sizes, tile: int, patches: int, mm_utils) -> dict[str, int]:
    """Token count of each size from the original's merge, the tile features replaced by zeros."""
    hidden = original.config.hidden_size
    original.encode_images = lambda images: torch.zeros(images.shape[0], patches * patches, hidden)
    counts = {}
    for width, height in sizes:
        grid_width, grid_height = mm_utils.get_anyres_image_grid_shape(
            (width, height), original.config.image_grid_pinpoints, tile
        )
        tiles = torch.zeros(1 + grid_width * grid_height, 3, 1, 1)  # only the tile count matters here
        ids = torch.tensor([[1, IMAGE_PLACEHOLDER]])
        embeds = original.prepare_inputs_labels_for_multimodal(ids, None, None, None, None, [tiles], [(width, height)])[
            4
        ]
        counts[f"{width}x{height}"] = embeds.shape[1] - 1
    del original.encode_images
    return counts


def main(original_dir: Path):
    from transformers import CLIPImageProcessorPil

    from llava_hf.testing import make_image, make_tiny_next_model, make_tiny_next_processor

    mm_utils, llava_arch, build_vision_projector = load_original(original_dir)
    tensors, counts, pixels_seen = {}, {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for merge in ("spatial_unpad", "flat"):
            model = make_tiny_next_model(mm_patch_merge_type=merge)
            processor = make_tiny_next_processor(config=model.config)
            tile = model.config.vision_config.image_size
            pinpoints_wh = [[width, height] for height, width in model.config.image_grid_pinpoints]
            tower_folder = Path(scratch) / f"clip-{merge}"
            model.model.vision_tower.save_pretrained(tower_folder)
            CLIPImageProcessorPil(
                size={"shortest_edge": tile}, crop_size={"height": tile, "width": tile}
            ).save_pretrained(tower_folder)
            config = original_config(tower_folder, model.config.text_config, merge, pinpoints_wh)
            original = build_original(llava_arch, build_vision_projector, model, config, tower_folder)
            clip_processor = original.model.vision_tower.image_processor
            lm = original_lm(model)

            for index, size in enumerate(FORWARD_SIZES if merge == "spatial_unpad" else FORWARD_SIZES[:FLAT_FORWARD]):
                images = [make_image(index, size)] + ([make_image(99, FORWARD_SIZES[0])] if index % 3 == 2 else [])
                pixel_values = [mm_utils.process_anyres_image(image, clip_processor, pinpoints_wh) for image in images]
                before, after = PROMPTS[index % 2]
                text = before + "<image>" * len(images) + after
                ids = processor.tokenizer(text, return_tensors="pt").input_ids[0]
                # each `<image>` -> one -200, where the original's tokenizer_image_token puts its placeholder
                collapsed = torch.tensor([[IMAGE_PLACEHOLDER if i == processor.image_token_id else i for i in ids]])
                with torch.no_grad():
                    _, _, _, _, embeds, _ = original.prepare_inputs_labels_for_multimodal(
                        collapsed, None, None, None, None, pixel_values, [image.size for image in images]
                    )
                    logits = lm(inputs_embeds=embeds).logits
                key = f"{merge}/{index}"
                pixels_seen[key] = [pixel_digest(pixels) for pixels in pixel_values]
                tensors[f"{key}/input_ids"] = collapsed[0]
                tensors[f"{key}/inputs_embeds"] = embeds[0].contiguous()
                tensors[f"{key}/logits"] = logits[0, -LOGIT_ROWS:].contiguous()

            sizes, rounding = count_sizes(mm_utils, llava_arch, tile, tile // 8, pinpoints_wh, limit=300)
            counts[f"tiny/{merge}"] = {"counts": original_counts(original, sizes, tile, tile // 8, mm_utils)}
            if merge == "spatial_unpad":
                counts[f"tiny/{merge}"]["builtin_rounding_differs"] = [f"{w}x{h}" for w, h in rounding]

        # The released 1.6 config (336 px tiles, patch 14): counts only, with zero features.
        real = SimpleNamespace(**{**vars(config), "image_grid_pinpoints": REAL_PINPOINTS_WH, "hidden_size": 4})
        real_original = build_original(llava_arch, build_vision_projector, model, config, tower_folder)
        for merge in ("spatial_unpad", "flat"):
            real_original.config = SimpleNamespace(**{**vars(real), "mm_patch_merge_type": merge})
            real_original.model.image_newline = torch.nn.Parameter(torch.zeros(4))
            real_original.model.embed_tokens = torch.nn.Embedding(2, 4)
            real_tower = SimpleNamespace(
                num_patches_per_side=REAL_TILE // REAL_PATCH, config=SimpleNamespace(image_size=REAL_TILE)
            )
            real_original.get_vision_tower = lambda tower=real_tower: tower
            sizes, rounding = count_sizes(
                mm_utils, llava_arch, REAL_TILE, REAL_TILE // REAL_PATCH, REAL_PINPOINTS_WH, limit=1500
            )
            counts[f"real/{merge}"] = {
                "counts": original_counts(real_original, sizes, REAL_TILE, REAL_TILE // REAL_PATCH, mm_utils)
            }
            if merge == "spatial_unpad":
                counts[f"real/{merge}"]["builtin_rounding_differs"] = [f"{w}x{h}" for w, h in rounding]

    OUT_DIR.mkdir(exist_ok=True)
    save_file(tensors, OUT_DIR / "reference.safetensors", metadata={"forward_sizes": json.dumps(FORWARD_SIZES)})
    real_clip = CLIPImageProcessorPil(
        size={"shortest_edge": REAL_TILE}, crop_size={"height": REAL_TILE, "width": REAL_TILE}
    )
    pixels_seen["real"] = {
        f"{w}x{h}": pixel_digest(mm_utils.process_anyres_image(make_image(seed, (w, h)), real_clip, REAL_PINPOINTS_WH))
        for seed, (w, h) in enumerate(REAL_PIXEL_SIZES)
    }
    reference = {"pixel_values": pixels_seen, **counts}
    (OUT_DIR / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print({key: len(value["counts"]) for key, value in counts.items()}, "sizes counted")


if __name__ == "__main__":
    if len(sys.argv) != 2 or not (Path(sys.argv[1]) / "llava" / "mm_utils.py").is_file():
        sys.exit("usage: python tests/assets/make_llava_next_reference.py ORIGINAL_DIR (holding llava/mm_utils.py)")
    main(Path(sys.argv[1]))
