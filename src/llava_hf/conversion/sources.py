"""Reading original LLaVA sources: where a folder comes from (local or Hub), which format it is, whether its `mm_*`
settings can be honoured, and its weights split into LLM / projector / vision tower (a LoRA run merged into its base).

Formats are detected from the files, never from the folder name (the original `llava/model/builder.py` dispatches on
substrings of the name, its most confusing habit).
"""

import ast
from collections.abc import Iterator
from pathlib import Path

import torch

from .common import ConversionError, read_json

# Fields of an original config.json that change nothing at inference (training switches, learning rates).
TRAINING_ONLY_FIELDS = {
    "mm_projector_lr",
    "mm_vision_tower_lr",
    "tune_mm_mlp_adapter",
    "freeze_mm_mlp_adapter",
    "use_mm_proj",
    "group_by_modality_length",
    "unfreeze_mm_vision_tower",
    "tune_mm_vision_resampler",
    "freeze_backbone",
    "mm_resampler_type",
}
SUPPORTED_ASPECT_RATIOS = {"pad", "square", "anyres"}
# LLaVA-1.6's patch merges for AnyRes ("flat" is also every earlier model's: one tile, nothing to merge).
PATCH_MERGE_TYPES = ("flat", "spatial_unpad")
# Original model types / architectures with a Llama-style LLM (-34b is Yi, Llama-shaped) and with Mistral's.
ORIGINAL_MODEL_TYPES = {"llava": "llama", "llava_llama": "llama", "llava_mistral": "mistral"}
ORIGINAL_ARCHITECTURES = {"LlavaLlamaForCausalLM": "llama", "LlavaMistralForCausalLM": "mistral"}
SELECT_FEATURE_TO_STRATEGY = {"patch": "default", "cls_patch": "full"}


def resolve_folder(name_or_path: str | Path, what: str) -> Path:
    """A local folder, or a Hub repo id downloaded (or read from the offline cache) with snapshot_download."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if path.exists() or str(name_or_path).startswith((".", "/")) or str(name_or_path).count("/") != 1:
        raise ConversionError(f"{what} {str(name_or_path)!r} is not a folder; give a checkpoint folder or a repo id.")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(
                str(name_or_path),
                allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model", "*.jinja", "*.txt", "*.md"],
            )
        )
    except Exception as error:  # offline miss, unknown repo, gated repo
        raise ConversionError(
            f"{what} {str(name_or_path)!r} is neither a local folder nor a reachable Hub repo ({type(error).__name__}: "
            f"{error}); pass a local path."
        ) from error


def weight_files(folder: Path) -> list[Path]:
    """The weight files of a (possibly sharded) `.safetensors` or `.bin` checkpoint; shards an index names must exist."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(read_json(index)["weight_map"].values()))
            missing = [name for name in files if not (folder / name).is_file()]
            if missing:
                raise ConversionError(f"{folder} is incomplete: {index_name} lists missing shard(s) {missing}.")
            return [folder / name for name in files]
    paths = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not paths:
        raise ConversionError(
            f"no weights in {folder}: expected model*.safetensors or pytorch_model*.bin (sharded with an index or not)."
        )
    return paths


def iter_state_dict_files(folder: Path) -> Iterator[tuple[Path, str, torch.Tensor]]:
    """(file, name, tensor) for every weight, then (file, None, None) when a file is done, before the next is read;
    a conversion holds as little as the format allows: one `.bin` shard (a pickle cannot be read in part; its tensors
    are released as they are handed out), or one tensor of a `.safetensors` file (read through its header)."""
    from safetensors import safe_open

    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as handle:
                for name in handle.keys():
                    yield path, name, handle.get_tensor(name)
        else:
            shard = torch.load(path, map_location="cpu", weights_only=True)
            for name in list(shard):
                yield path, name, shard.pop(name)
            del shard
        yield path, None, None


def load_state_dict_files(folder: Path) -> dict[str, torch.Tensor]:
    """All weights of a (possibly sharded) `.safetensors` or `.bin` checkpoint in one dict."""
    return {name: tensor for _, name, tensor in iter_state_dict_files(folder) if name is not None}


def state_dict_names(folder: Path) -> set[str] | None:
    """The weight names, from the index or the safetensors headers, without reading weights; None for an unindexed
    `.bin` (only loading it would tell)."""
    from safetensors import safe_open

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index_name).is_file():
            return set(read_json(folder / index_name)["weight_map"])
    names = set()
    for path in weight_files(folder):
        if path.suffix != ".safetensors":
            return None
        with safe_open(path, framework="pt") as handle:
            names.update(handle.keys())
    return names


def original_weight_kind(name: str) -> str:
    """Which part of an original LlavaLlamaForCausalLM a weight belongs to: projector, tower, skip or llm."""
    if name.startswith("model.mm_projector.") or name == "model.image_newline":
        return "projector"  # LLaVA-1.6's learned row separator is part of the multimodal adapter
    if name.startswith("model.vision_tower.vision_tower."):
        return "tower"
    if name.endswith("rotary_emb.inv_freq"):
        return "skip"  # a buffer transformers 4.31 saved; recomputed from rope_theta on load
    return "llm"


def tower_key(name: str) -> str:
    """`model.vision_tower.vision_tower.vision_model.x` -> `x`, the CLIPVisionModel name under `vision_model.`."""
    return name.removeprefix("model.vision_tower.vision_tower.").removeprefix("vision_model.")


def detect_source_format(folder: Path) -> str:
    """'original', 'stage1', 'lora', 'transformers' or 'llava_hf', from the files and config.json's fields."""
    if (folder / "adapter_config.json").is_file():
        if not (folder / "non_lora_trainables.bin").is_file():
            raise ConversionError(
                f"{folder} holds a PEFT adapter but no non_lora_trainables.bin (the projector of a LLaVA LoRA run); "
                "copy it from the run's output folder."
            )
        return "lora"
    if not (folder / "config.json").is_file():
        raise ConversionError(f"{folder} has no config.json; is this a checkpoint folder?")
    config = read_json(folder / "config.json")
    architectures = config.get("architectures") or []
    if config.get("model_type") in ("llava_hf", "llava_hf_next", "llava_next"):
        return "llava_hf"  # LLaVA-1.6 in the built-in llava_next layout loads into llava_hf's classes as it is
    if "LlavaForConditionalGeneration" in architectures:
        return "transformers"
    if (
        (folder / "mm_projector.bin").is_file()
        and not any(folder.glob("*.safetensors"))
        and not any(folder.glob("pytorch_model*.bin"))
    ):
        return "stage1"
    if config.get("model_type") in ORIGINAL_MODEL_TYPES or set(architectures) & set(ORIGINAL_ARCHITECTURES):
        if "mm_vision_tower" not in config:
            raise ConversionError(f"{folder}/config.json looks like LLaVA but has no mm_vision_tower field.")
        return "original"
    if any(name.startswith("Llava") for name in architectures):
        raise ConversionError(
            f"architecture {architectures[0]} is not supported; only Llama- and Mistral-based LLaVA "
            "(LlavaLlamaForCausalLM, LlavaMistralForCausalLM) and transformers' LlavaForConditionalGeneration "
            "checkpoints convert."
        )
    raise ConversionError(
        f"{folder} is not a LLaVA checkpoint (model_type {config.get('model_type')!r}, architectures {architectures})."
    )


def check_mm_fields(config: dict) -> dict:
    """Every mm_* field honoured or rejected; returns the settings the conversion uses."""
    if config.get("mm_use_im_start_end"):
        raise ConversionError(
            "mm_use_im_start_end=True (image wrapped in <im_start>/<im_end> tokens) is not supported: llava_hf's "
            "processor writes only the image tokens, so the converted model would see different inputs."
        )
    if config.get("mm_use_im_patch_token"):
        raise ConversionError(
            "mm_use_im_patch_token=True (an extra <im_patch> vocabulary entry, LLaVA v0) is not supported; only "
            "checkpoints trained with mm_use_im_patch_token=False convert."
        )
    aspect = config.get("image_aspect_ratio") or "square"  # the original's default when the field is absent
    if aspect not in SUPPORTED_ASPECT_RATIOS:
        raise ConversionError(
            f"image_aspect_ratio={aspect!r} is not supported; 'anyres' (LLaVA-1.6), 'pad' (LLaVA-1.5) and 'square' "
            "(LLaVA v1) convert."
        )
    merge = config.get("mm_patch_merge_type", "flat")
    if merge not in PATCH_MERGE_TYPES or (merge != "flat" and aspect != "anyres"):
        raise ConversionError(
            f"mm_patch_merge_type={merge!r} with image_aspect_ratio={aspect!r} is not supported; 'spatial_unpad' and "
            "'flat' convert with 'anyres', 'flat' with the others."
        )
    pinpoints = config.get("image_grid_pinpoints")
    if isinstance(pinpoints, str):  # the original accepts the list written as a string (ast.literal_eval)
        pinpoints = ast.literal_eval(pinpoints)
    if aspect == "anyres" and not pinpoints:
        raise ConversionError("image_aspect_ratio='anyres' needs image_grid_pinpoints in config.json.")
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURE_TO_STRATEGY:
        raise ConversionError(f"mm_vision_select_feature={feature!r} is not supported; use 'patch' or 'cls_patch'.")
    if "mm_vision_select_layer" not in config:
        raise ConversionError("config.json has no mm_vision_select_layer; LLaVA-1.5 uses -2 — add it to config.json.")
    projector_type = config.get("mm_projector_type", "linear")  # the original's default
    from llava_hf.modeling.configuration_llava import PROJECTOR_TYPE_PATTERN

    if not PROJECTOR_TYPE_PATTERN.match(projector_type):
        raise ConversionError(
            f"mm_projector_type={projector_type!r} is unknown; supported: linear, identity, mlp<N>x_gelu."
        )
    for key in config:
        known = {
            "mm_use_im_start_end",
            "mm_use_im_patch_token",
            "mm_patch_merge_type",
            "mm_vision_select_feature",
            "mm_vision_select_layer",
            "mm_projector_type",
            "mm_vision_tower",
            "mm_hidden_size",
        }
        if key.startswith("mm_") and key not in known | TRAINING_ONLY_FIELDS:
            raise ConversionError(f"config.json field {key}={config[key]!r} is unknown to this converter.")
    return {
        "projector_type": projector_type,
        "vision_feature_layer": int(config["mm_vision_select_layer"]),
        "vision_feature_select_strategy": SELECT_FEATURE_TO_STRATEGY[feature],
        "image_aspect_ratio": aspect,
        "mm_hidden_size": config.get("mm_hidden_size"),
        "mm_patch_merge_type": merge,
        "image_grid_pinpoints": pinpoints,  # (width, height) pairs, as the original writes them
        "language_model": ORIGINAL_MODEL_TYPES.get(config.get("model_type"))
        or next(
            (ORIGINAL_ARCHITECTURES[a] for a in config.get("architectures") or [] if a in ORIGINAL_ARCHITECTURES),
            "llama",
        ),
        # LLaVA-1.6 trained the tower: with this flag the original builds it at load time and takes the checkpoint's
        # `model.vision_tower.*` weights over the named tower's.
        "unfreeze_mm_vision_tower": bool(config.get("unfreeze_mm_vision_tower")),
    }


def split_original_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(LLM `model.*`/`lm_head.*`, projector `model.mm_projector.*`, tower `model.vision_tower.vision_tower.*`)."""
    parts = {"llm": {}, "projector": {}, "tower": {}, "skip": {}}
    for name, tensor in state.items():
        kind = original_weight_kind(name)
        parts[kind][tower_key(name) if kind == "tower" else name] = tensor
    return parts["llm"], parts["projector"], parts["tower"]


def projector_from_file(path: Path) -> dict[str, torch.Tensor]:
    """`mm_projector.bin` / `non_lora_trainables.bin` keys normalised to `model.mm_projector.*`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    normalised = {}
    for name, tensor in state.items():
        name = name.removeprefix("base_model.model.")
        if "mm_projector" in name:
            normalised["model.mm_projector." + name.split("mm_projector.", 1)[1]] = tensor
    if not normalised:
        raise ConversionError(f"{path} holds no mm_projector weights (keys: {sorted(state)[:5]}).")
    return normalised


def merged_lora_state(lora_folder: Path, base_folder: Path) -> dict[str, torch.Tensor]:
    """The base LLM with the LoRA adapter merged in (PEFT's merge_and_unload), as `LlamaForCausalLM` keys."""
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    base = LlamaForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, lora_folder).merge_and_unload()
    return {name: tensor.detach().clone() for name, tensor in merged.state_dict().items()}
