"""Original LLaVA -> llava_hf: an `original`, `stage1` or `lora` source (see sources.py) written as a complete llava_hf
checkpoint (config, safetensors weights, processor, generation config) into a staging folder.

`convert.py` (`llava-hf convert`) picks the direction, stages the destination and runs the verification; this file
only builds. Weights keep the source's dtype; `<image>` and `<pad>` are appended to the vocabulary (NEW_TOKENS_INIT).
"""

import json
from pathlib import Path

import torch

from .common import ConversionError, read_json, write_safetensors
from .sources import (
    check_mm_fields,
    load_state_dict_files,
    merged_lora_state,
    projector_from_file,
    resolve_folder,
    split_original_state,
)

NEW_TOKENS_INIT = (
    "The `<image>` and `<pad>` rows appended to `embed_tokens` and `lm_head` were initialised to the mean of the "
    "existing rows: existing tokens keep exactly the same logits, and a new token's logit is the mean of the "
    "existing logits, so it can never be the greedy choice."
)


def projector_checkpoint_keys(projector_state: dict, projector_type: str, config) -> dict[str, torch.Tensor]:
    """`model.mm_projector.*` -> on-disk `multi_modal_projector.linear_k.*`, shapes checked against the config."""
    if projector_type == "identity":
        return {}
    renamed = {}
    depth = config.projector_depth
    for index in range(depth):
        source = "model.mm_projector" if projector_type == "linear" else f"model.mm_projector.{2 * index}"
        in_features = config.projector_input_size if index == 0 else config.text_config.hidden_size
        expected = {"weight": (config.text_config.hidden_size, in_features), "bias": (config.text_config.hidden_size,)}
        for part, shape in expected.items():
            name = f"{source}.{part}"
            if name not in projector_state:
                raise ConversionError(
                    f"projector weight {name} is missing for mm_projector_type={projector_type!r} (found "
                    f"{sorted(projector_state) or 'no projector weights'}); is the projector file from this run?"
                )
            if tuple(projector_state[name].shape) != shape:
                raise ConversionError(
                    f"projector weight {name} has shape {tuple(projector_state[name].shape)}, expected {shape} "
                    f"(vision features {config.projector_input_size} -> LLM hidden {config.text_config.hidden_size})."
                )
            renamed[f"multi_modal_projector.linear_{index + 1}.{part}"] = projector_state[name]
    extra = (
        set(projector_state)
        - {f"model.mm_projector.{k}" for k in ("weight", "bias")}
        - {f"model.mm_projector.{2 * i}.{p}" for i in range(depth) for p in ("weight", "bias")}
    )
    if extra:
        raise ConversionError(f"projector weights {sorted(extra)} do not fit mm_projector_type={projector_type!r}.")
    return renamed


def llm_checkpoint_keys(llm_state: dict, text_config) -> dict[str, torch.Tensor]:
    """Llama/Mistral keys checked against a meta-device causal LM of `text_config`, renamed to `language_model.*`."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(text_config)
        expected = {name: tuple(t.shape) for name, t in lm.state_dict().items()}
    missing = sorted(set(expected) - set(llm_state))
    if missing:
        raise ConversionError(f"the LLM weights are incomplete: {len(missing)} missing, e.g. {missing[:3]}.")
    unexpected = sorted(set(llm_state) - set(expected))
    if unexpected:
        raise ConversionError(
            f"unexpected weights in the checkpoint (not Llama, projector or tower): {unexpected[:5]}."
        )
    for name, shape in expected.items():
        if tuple(llm_state[name].shape) != shape:
            raise ConversionError(f"{name} has shape {tuple(llm_state[name].shape)}, config.json implies {shape}.")
    return {"language_model." + name: tensor for name, tensor in llm_state.items()}


def add_new_token_rows(matrix: torch.Tensor, count: int) -> torch.Tensor:
    """Append `count` rows equal to the mean of the existing rows (see NEW_TOKENS_INIT)."""
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(count, -1)], dim=0)


def load_vision_tower(folder: Path):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision_config = CLIPVisionConfig.from_pretrained(folder)
    tower = CLIPVisionModel.from_pretrained(folder, dtype=torch.float32)
    return vision_config, tower


def build_tokenizer(tokenizer_folder: Path, source_config: dict):
    """The source tokenizer as a fast tokenizer + `<image>` + `<pad>`, tokenizing like the original did.

    `legacy=True` makes every text piece between special tokens start with SentencePiece's dummy prefix, which is
    what the original's per-chunk tokenization produced right after `<image>` and at the start after BOS.
    """
    from transformers import AutoTokenizer

    if not any((tokenizer_folder / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise ConversionError(f"no tokenizer in {tokenizer_folder} (tokenizer.model or tokenizer.json).")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder, legacy=True, image_token="<image>")
    except (ImportError, ValueError) as error:
        raise ConversionError(
            f"could not load the tokenizer in {tokenizer_folder} ({error}); SentencePiece-only tokenizers "
            "(tokenizer.model) need `pip install sentencepiece protobuf` (the `conversion` extra)."
        ) from error
    if tokenizer.pad_token is None or tokenizer.pad_token == tokenizer.unk_token:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
    if "tokenizer_model_max_length" in source_config:
        tokenizer.model_max_length = source_config["tokenizer_model_max_length"]
    if "tokenizer_padding_side" in source_config:
        tokenizer.padding_side = source_config["tokenizer_padding_side"]
    return tokenizer


def build_image_processor_for(tower_folder: Path, vision_config, aspect: str, grid_pinpoints=None):
    """The tower's CLIP preprocessing: LLaVA-1.5's ("pad"/"square") or LLaVA-1.6's AnyRes over `grid_pinpoints`."""
    from llava_hf.processing import build_image_processor, build_next_image_processor

    preprocessor = tower_folder / "preprocessor_config.json"
    settings = read_json(preprocessor) if preprocessor.is_file() else {}
    crop = settings.get("crop_size", vision_config.image_size)
    image_size = crop["height"] if isinstance(crop, dict) else crop
    kwargs = {key: tuple(settings[key]) for key in ("image_mean", "image_std") if key in settings}
    if aspect == "anyres":
        return build_next_image_processor(image_size, grid_pinpoints, **kwargs)
    return build_image_processor(image_size, aspect, **kwargs)


def anyres_config_fields(settings: dict) -> dict:
    """LLaVA-1.6 fields of `LlavaHfNextConfig`: the original's (width, height) pinpoints as (height, width)."""
    return {
        "image_grid_pinpoints": [[height, width] for width, height in settings["image_grid_pinpoints"]],
        "mm_patch_merge_type": settings["mm_patch_merge_type"],
        "architectures": ["LlavaHfNextForConditionalGeneration"],
    }


def convert_original(
    source_folder: Path,
    source_format: str,
    staging: Path,
    vision_tower: str | None = None,
    base_model: str | None = None,
    use_checkpoint_vision_tower: bool = False,
    chat_template: str = "vicuna_v1",
):
    """Write config, weights, processor and generation config of an original-format source into `staging`.

    `vision_tower` / `base_model` override the tower and base LLM the source names; `use_checkpoint_vision_tower`
    takes the tower weights a DeepSpeed run saved in the checkpoint. Returns (provenance for the model card, the
    inputs `verification.verify_conversion` needs to rerun the original computation).
    """
    from transformers import GenerationConfig, LlamaConfig, MistralConfig

    from llava_hf.modeling import LlavaHfConfig, LlavaHfNextConfig
    from llava_hf.processing import LlavaHfNextProcessor, LlavaHfProcessor

    source_config = read_json(source_folder / "config.json")
    settings = check_mm_fields(source_config)

    tower_name = vision_tower or source_config.get("mm_vision_tower")
    if not tower_name:
        raise ConversionError("no vision tower: the config has no mm_vision_tower; pass --vision_tower PATH_OR_REPO.")
    try:
        tower_folder = resolve_folder(tower_name, "vision tower (mm_vision_tower)")
    except ConversionError as error:
        raise ConversionError(
            f"{error} Released LLaVA checkpoints do not contain the tower; pass --vision_tower."
        ) from error
    vision_config, tower = load_vision_tower(tower_folder)

    base_folder = None
    if source_format == "original":
        llm_state, projector_state, saved_tower = split_original_state(load_state_dict_files(source_folder))
        tokenizer_folder = source_folder
    else:
        base_name = base_model or (
            read_json(source_folder / "adapter_config.json")["base_model_name_or_path"]
            if source_format == "lora"
            else source_config.get("_name_or_path")
        )
        if not base_name:
            raise ConversionError(f"the {source_format} source names no base LLM; pass --base_model PATH_OR_REPO.")
        base_folder = resolve_folder(base_name, "base LLM")
        if source_format == "lora":
            llm_state = merged_lora_state(source_folder, base_folder)
            projector_state = projector_from_file(source_folder / "non_lora_trainables.bin")
        else:
            llm_state, _, _ = split_original_state(load_state_dict_files(base_folder))
            projector_state = projector_from_file(source_folder / "mm_projector.bin")
        saved_tower = {}
        has_tokenizer = (source_folder / "tokenizer.model").is_file() or (source_folder / "tokenizer.json").is_file()
        tokenizer_folder = source_folder if has_tokenizer else base_folder

    image_newline = projector_state.pop("model.image_newline", None)
    anyres = settings["image_aspect_ratio"] == "anyres"
    if anyres and settings["mm_patch_merge_type"] == "spatial_unpad" and image_newline is None:
        raise ConversionError("mm_patch_merge_type='spatial_unpad' but the checkpoint has no model.image_newline.")
    tower_state = {name: tensor.float() for name, tensor in tower.state_dict().items()}
    tower_origin = str(tower_name)
    if use_checkpoint_vision_tower or (settings["unfreeze_mm_vision_tower"] and saved_tower):
        if not saved_tower:
            raise ConversionError("--use_checkpoint_vision_tower was given but the checkpoint holds no vision tower.")
        missing = sorted(set(tower_state) - set(saved_tower))
        if missing:
            raise ConversionError(f"the checkpoint's vision tower is incomplete: missing {missing[:3]}.")
        tower_state = {name: saved_tower[name].float() for name in tower_state}
        tower_origin = "the checkpoint's model.vision_tower.vision_tower.* weights"

    llm_dtype = llm_state["model.embed_tokens.weight"].dtype
    if settings["mm_hidden_size"] not in (None, vision_config.hidden_size):
        raise ConversionError(
            f"mm_hidden_size={settings['mm_hidden_size']} but the vision tower {tower_name} has hidden size "
            f"{vision_config.hidden_size}; pass the tower the model was trained with (--vision_tower)."
        )

    tokenizer = build_tokenizer(tokenizer_folder, source_config)
    text_class = MistralConfig if settings["language_model"] == "mistral" else LlamaConfig
    text_fields = {f: source_config[f] for f in text_class.__dataclass_fields__ if f in source_config}
    text_fields.pop("dtype", None)
    text_config = text_class(**text_fields)
    old_vocab = text_config.vocab_size
    llm_disk = llm_checkpoint_keys(llm_state, text_config)
    new_rows = len(tokenizer) - old_vocab
    if new_rows < 0:
        raise ConversionError(f"the tokenizer has {len(tokenizer)} tokens but the LLM only {old_vocab} rows.")
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        llm_disk[name] = add_new_token_rows(llm_disk[name], new_rows)
    text_config.vocab_size = len(tokenizer)
    text_config.pad_token_id = tokenizer.pad_token_id

    config_class = LlavaHfNextConfig if anyres else LlavaHfConfig
    layout = anyres_config_fields(settings) if anyres else {"image_aspect_ratio": settings["image_aspect_ratio"]}
    config = config_class(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        projector_type=settings["projector_type"],
        vision_feature_layer=settings["vision_feature_layer"],
        vision_feature_select_strategy=settings["vision_feature_select_strategy"],
        dtype=str(llm_dtype).removeprefix("torch."),
        **{"architectures": ["LlavaHfForConditionalGeneration"], **layout},
    )
    weights = dict(llm_disk)
    weights.update(projector_checkpoint_keys(projector_state, settings["projector_type"], config))
    weights.update({"vision_tower." + name: tensor for name, tensor in tower_state.items()})
    if image_newline is not None and anyres and settings["mm_patch_merge_type"] == "spatial_unpad":
        weights["image_newline"] = image_newline
    weights = {name: tensor.to(llm_dtype) for name, tensor in weights.items()}
    write_safetensors(weights, staging)
    config.save_pretrained(staging)

    image_processor = build_image_processor_for(
        tower_folder, vision_config, settings["image_aspect_ratio"], anyres and config.image_grid_pinpoints
    )
    processor_kwargs = {"mm_patch_merge_type": config.mm_patch_merge_type} if anyres else {}
    processor = (LlavaHfNextProcessor if anyres else LlavaHfProcessor)(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=chat_template,
        **config.image_token_settings,
        **processor_kwargs,
    )
    processor.save_pretrained(staging)
    # transformers does not write `legacy` back; without it the reloaded tokenizer drops the dummy prefix after
    # special tokens, and the token after <image> would differ from what the model was trained on.
    tokenizer_config_path = staging / "tokenizer_config.json"
    tokenizer_config = read_json(tokenizer_config_path)
    tokenizer_config.update(legacy=True, add_prefix_space=True)
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2))

    generation = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    generation.save_pretrained(staging)

    source_tokenizer_config = tokenizer_folder / "tokenizer_config.json"
    source_legacy = (
        read_json(source_tokenizer_config).get("legacy", True) if source_tokenizer_config.is_file() else True
    )
    provenance = {
        "source_format": source_format,
        "base_model": str(base_model or base_folder) if base_folder else None,
        "vision_tower": tower_origin,
        "projector_type": settings["projector_type"],
        "image_aspect_ratio": settings["image_aspect_ratio"],
        **({"mm_patch_merge_type": settings["mm_patch_merge_type"]} if anyres else {}),
        "vision_feature_layer": settings["vision_feature_layer"],
        "dtype": str(llm_dtype).removeprefix("torch."),
        "new_tokens": {"<image>": tokenizer.image_token_id, "<pad>": tokenizer.pad_token_id},
        "new_token_init": NEW_TOKENS_INIT,
        "source_tokenizer_legacy": source_legacy,
        "chat_template": chat_template,
    }
    reference_inputs = {
        "llm_state": llm_state,
        "text_config_fields": text_fields,
        "text_model": settings["language_model"],
        "projector_state": projector_state,
        # the original ran the tower in the checkpoint's dtype too (model.to(float16)), so compare with those values
        "tower_state": {name: tensor.to(llm_dtype).float() for name, tensor in tower_state.items()},
        "vision_config": vision_config,
        "settings": settings,
        "sentencepiece_model": tokenizer_folder / "tokenizer.model",
        "source_legacy": source_legacy,
        "image_newline": None if image_newline is None else image_newline.float(),
        "image_mean": processor.image_processor.image_mean,
        "image_std": processor.image_processor.image_std,
    }
    return provenance, reference_inputs
