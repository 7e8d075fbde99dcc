"""Original LLaVA -> llava_hf: an `original`, `stage1` or `lora` source (see sources.py) written as a complete llava_hf
checkpoint (config, safetensors weights, processor, generation config) into a staging folder.

`convert.py` (`llava-hf convert`) picks the direction, stages the destination and runs the verification; this file
only builds. Weights keep the source's dtype; `<image>` and `<pad>` are appended to the vocabulary (NEW_TOKENS_INIT),
or take ids in the rows of a padded vocabulary (PADDED_VOCABULARY_INIT).

The weights stream: one source shard (`.bin`) or one tensor (`.safetensors`) is in memory at a time, renamed, checked
and written to the destination's safetensors shards before the next is read, so a 13B release (26 GB) converts on
a machine with less memory than that. The vision tower is read last, when no LLM weight is held any more.
"""

import json
import warnings
from pathlib import Path

import torch

from .common import CARRY_BYTES, ConversionError, StreamingSafetensorsWriter, read_json
from .sources import (
    check_mm_fields,
    iter_state_dict_files,
    load_state_dict_files,
    merged_lora_state,
    original_weight_kind,
    projector_from_file,
    resolve_folder,
    split_original_state,
    state_dict_names,
    tower_key,
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


PADDED_VOCABULARY_INIT = (
    "The source's embedding has more rows than its tokenizer has tokens (a padded vocabulary); every row is kept as "
    "the source has it, and `<image>` / `<pad>` took the first ids past the tokenizer, inside the padding rows."
)


def expected_llm_shapes(text_config) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every weight the causal LM of `text_config` (Llama, Mistral) has (meta device: no memory)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        language_model = AutoModelForCausalLM.from_config(text_config)
        return {name: tuple(t.shape) for name, t in language_model.state_dict().items()}


def check_llm_weight(name: str, tensor: torch.Tensor, expected: dict[str, tuple[int, ...]]):
    if name not in expected:
        raise ConversionError(f"unexpected weight in the checkpoint (not the LLM, projector or tower): {name}.")
    shape = tuple(tensor.shape)
    if shape == expected[name]:
        return
    if name in ("model.embed_tokens.weight", "lm_head.weight") and shape[1:] == expected[name][1:]:
        raise ConversionError(
            f"{name} has {shape[0]} rows but config.json says vocab_size={expected[name][0]}; the weights and "
            "config.json do not belong together (set vocab_size to the number of rows the weights have)."
        )
    raise ConversionError(f"{name} has shape {shape}, but config.json implies {expected[name]}.")


def check_llm_complete(seen: set[str], expected: dict[str, tuple[int, ...]]):
    missing = sorted(set(expected) - seen)
    if missing:
        raise ConversionError(f"the LLM weights are incomplete: {len(missing)} missing, e.g. {missing[:3]}.")


def tokenizer_source_length(tokenizer) -> int:
    """How many ids the source tokenizer uses: its vocabulary without the `<image>` / `<pad>` added here."""
    added_here = {"<image>", "<pad>"}
    return 1 + max(
        index
        for token, index in tokenizer.get_vocab().items()
        if not (token in added_here and index >= tokenizer.vocab_size)
    )


def vocabulary_rows(tokenizer, rows: int, tokenizer_folder: Path) -> tuple[int, str]:
    """(rows to append to embed_tokens / lm_head, how the added tokens were initialised) for an embedding with
    `rows` rows; raises when the tokenizer uses ids the embedding does not have."""
    source_length = tokenizer_source_length(tokenizer)
    if source_length > rows:
        raise ConversionError(
            f"the LLM's embedding has {rows} rows (vocab_size in config.json) but the tokenizer in {tokenizer_folder} "
            f"uses {source_length} ids: ids {rows}..{source_length - 1} have no embedding. The tokenizer does not "
            "belong to these weights; convert with the tokenizer the model was trained with."
        )
    new_rows = max(0, len(tokenizer) - rows)
    return new_rows, (PADDED_VOCABULARY_INIT if rows > source_length else NEW_TOKENS_INIT)


def add_new_token_rows(matrix: torch.Tensor, count: int) -> torch.Tensor:
    """Append `count` rows equal to the mean of the existing rows (see NEW_TOKENS_INIT)."""
    mean = matrix.float().mean(dim=0, keepdim=True).to(matrix.dtype)
    return torch.cat([matrix, mean.expand(count, -1)], dim=0)


def load_vision_tower(folder: Path) -> dict[str, torch.Tensor]:
    """The CLIPVisionModel weights of a CLIP folder (a full CLIPModel or a vision-only one), float32."""
    from transformers import CLIPVisionModel
    from transformers.utils import logging

    # A full CLIPModel folder (as openai/clip-vit-large-patch14-336 is) has a text half the vision model leaves out:
    # transformers would report each of its weights as unexpected. Missing vision weights are what matters here.
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        tower, info = CLIPVisionModel.from_pretrained(folder, dtype=torch.float32, output_loading_info=True)
    finally:
        logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        missing = sorted(info["missing_keys"])
        raise ConversionError(f"the vision tower in {folder} is incomplete: missing {missing[:3]}.")
    return {name: tensor.detach() for name, tensor in tower.state_dict().items()}


def check_saved_tower(saved_tower: dict, vision_config) -> dict[str, torch.Tensor]:
    """The tower weights a DeepSpeed run saved, complete for `vision_config`, as float32 CLIPVisionModel weights."""
    from transformers import CLIPVisionModel

    with torch.device("meta"):
        names = list(CLIPVisionModel(vision_config).state_dict())
    missing = sorted(set(names) - set(saved_tower))
    if missing:
        raise ConversionError(f"the checkpoint's vision tower is incomplete: missing {missing[:3]}.")
    return {name: saved_tower[name].float() for name in names}


def build_tokenizer(tokenizer_folder: Path, source_config: dict):
    """The source tokenizer as a fast tokenizer + `<image>` + `<pad>`, tokenizing like the original did.

    `legacy=True` makes every text piece between special tokens start with SentencePiece's dummy prefix, which is
    what the original's per-chunk tokenization produced right after `<image>` and at the start after BOS.
    """
    from transformers import AutoTokenizer

    if not any((tokenizer_folder / name).is_file() for name in ("tokenizer.model", "tokenizer.json")):
        raise ConversionError(f"no tokenizer in {tokenizer_folder} (tokenizer.model or tokenizer.json).")
    try:
        with warnings.catch_warnings():
            # The releases' config.json says `"rope_scaling": null`, which transformers 5 reads (to find the tokenizer
            # class) and warns about as deprecated; the converted config is written with `rope_parameters`.
            warnings.filterwarnings("ignore", message="`rope_scaling` is deprecated", category=FutureWarning)
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


def read_source_weights(
    source_format: str,
    source_folder: Path,
    base_folder: Path | None,
    tower_folder: Path,
    use_checkpoint_vision_tower: bool,
    llm_dtype: torch.dtype,
) -> tuple[dict, dict, dict]:
    """(LLM, projector, tower) weights of the source, read the way the original code reads them, for the
    verification's reference computation. The tower is rounded to the checkpoint's dtype: the original ran it in
    that dtype too (`model.to(float16)`)."""
    if source_format == "lora":
        llm = merged_lora_state(source_folder, base_folder)
        projector = projector_from_file(source_folder / "non_lora_trainables.bin")
    elif source_format == "stage1":
        llm, _, _ = split_original_state(load_state_dict_files(base_folder))
        projector = projector_from_file(source_folder / "mm_projector.bin")
    else:
        llm, projector, saved_tower = split_original_state(load_state_dict_files(source_folder))
    if use_checkpoint_vision_tower:
        from transformers import CLIPVisionConfig

        tower = check_saved_tower(saved_tower, CLIPVisionConfig.from_pretrained(tower_folder))
    else:
        tower = load_vision_tower(tower_folder)
    return llm, projector, {name: tensor.to(llm_dtype).float() for name, tensor in tower.items()}


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
    from transformers import CLIPVisionConfig, GenerationConfig, LlamaConfig, MistralConfig

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
    vision_config = CLIPVisionConfig.from_pretrained(tower_folder)
    if settings["mm_hidden_size"] not in (None, vision_config.hidden_size):
        raise ConversionError(
            f"mm_hidden_size={settings['mm_hidden_size']} but the vision tower {tower_name} has hidden size "
            f"{vision_config.hidden_size}; pass the tower the model was trained with (--vision_tower)."
        )

    base_folder = None
    if source_format == "original":
        llm_folder, tokenizer_folder, projector_state = source_folder, source_folder, {}
    else:
        base_name = base_model or (
            read_json(source_folder / "adapter_config.json")["base_model_name_or_path"]
            if source_format == "lora"
            else source_config.get("_name_or_path")
        )
        if not base_name:
            raise ConversionError(f"the {source_format} source names no base LLM; pass --base_model PATH_OR_REPO.")
        base_folder = resolve_folder(base_name, "base LLM")
        projector_file = "non_lora_trainables.bin" if source_format == "lora" else "mm_projector.bin"
        projector_state = projector_from_file(source_folder / projector_file)
        llm_folder = base_folder
        has_tokenizer = (source_folder / "tokenizer.model").is_file() or (source_folder / "tokenizer.json").is_file()
        tokenizer_folder = source_folder if has_tokenizer else base_folder

    tokenizer = build_tokenizer(tokenizer_folder, source_config)
    text_class = MistralConfig if settings["language_model"] == "mistral" else LlamaConfig
    text_fields = {f: source_config[f] for f in text_class.__dataclass_fields__ if f in source_config}
    text_fields.pop("dtype", None)
    text_config = text_class(**text_fields)
    expected = expected_llm_shapes(text_config)
    new_rows, new_token_init = vocabulary_rows(tokenizer, text_config.vocab_size, tokenizer_folder)
    text_config.vocab_size += new_rows
    text_config.pad_token_id = tokenizer.pad_token_id

    anyres = settings["image_aspect_ratio"] == "anyres"
    config_class = LlavaHfNextConfig if anyres else LlavaHfConfig
    layout = anyres_config_fields(settings) if anyres else {"image_aspect_ratio": settings["image_aspect_ratio"]}
    config = config_class(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        projector_type=settings["projector_type"],
        vision_feature_layer=settings["vision_feature_layer"],
        vision_feature_select_strategy=settings["vision_feature_select_strategy"],
        **{"architectures": ["LlavaHfForConditionalGeneration"], **layout},
    )
    # LLaVA-1.6 releases trained the tower (`unfreeze_mm_vision_tower`); their checkpoints hold it, and the original
    # builder loads it from there
    collect_tower = use_checkpoint_vision_tower or settings["unfreeze_mm_vision_tower"]

    if source_format == "lora":  # PEFT merges in memory: the merged LLM is one piece
        merged = merged_lora_state(source_folder, base_folder)
        pieces = ((None, name, merged.pop(name)) for name in list(merged))
    else:
        names = state_dict_names(llm_folder)
        if names is not None:  # an index or safetensors headers list the names: refuse before writing anything
            check_llm_complete({name for name in names if original_weight_kind(name) == "llm"}, expected)
        pieces = iter_state_dict_files(llm_folder)
    writer = StreamingSafetensorsWriter(staging)
    seen, saved_tower, llm_dtype, to_grow = set(), {}, None, {}

    def write_grown():
        # The matrices that gain rows are grown once the rest of their shard is written: growing copies the matrix,
        # and that copy next to a whole shard would be the conversion's peak.
        if to_grow:
            writer.flush(min_bytes=CARRY_BYTES)
        for name in list(to_grow):
            writer.add("language_model." + name, add_new_token_rows(to_grow.pop(name), new_rows).to(llm_dtype))

    for _, name, tensor in pieces:
        if name is None:  # a source file is done: write what came from it before the next is read
            write_grown()
            writer.flush(min_bytes=CARRY_BYTES)
            continue
        kind = original_weight_kind(name)
        if kind == "projector" and source_format == "original":
            projector_state[name] = tensor
        elif kind == "tower":
            if collect_tower:
                saved_tower[tower_key(name)] = tensor
        elif kind == "llm":
            check_llm_weight(name, tensor, expected)
            llm_dtype = llm_dtype or tensor.dtype
            if new_rows and name in ("model.embed_tokens.weight", "lm_head.weight"):
                to_grow[name] = tensor
            else:
                writer.add("language_model." + name, tensor.to(llm_dtype))
            seen.add(name)
        del tensor
    write_grown()
    check_llm_complete(seen, expected)
    config.dtype = str(llm_dtype).removeprefix("torch.")
    image_newline = projector_state.pop("model.image_newline", None)
    if anyres and settings["mm_patch_merge_type"] == "spatial_unpad" and image_newline is None:
        raise ConversionError("mm_patch_merge_type='spatial_unpad' but the checkpoint has no model.image_newline.")
    for name, tensor in projector_checkpoint_keys(projector_state, settings["projector_type"], config).items():
        writer.add(name, tensor.to(llm_dtype))
    if image_newline is not None and anyres and settings["mm_patch_merge_type"] == "spatial_unpad":
        writer.add("image_newline", image_newline.to(llm_dtype))

    tower_origin = str(tower_name)
    use_checkpoint_vision_tower = use_checkpoint_vision_tower or bool(saved_tower)
    if use_checkpoint_vision_tower:
        if not saved_tower:
            raise ConversionError("--use_checkpoint_vision_tower was given but the checkpoint holds no vision tower.")
        tower_state = check_saved_tower(saved_tower, vision_config)
        tower_origin = "the checkpoint's model.vision_tower.vision_tower.* weights"
    else:  # read only now, when no LLM weight is held any more
        tower_state = load_vision_tower(tower_folder)
    for name in list(tower_state):
        writer.add("vision_tower." + name, tower_state.pop(name).to(llm_dtype))
    writer.close()
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
        "new_token_init": new_token_init,
        "source_tokenizer_legacy": source_legacy,
        "chat_template": chat_template,
    }
    reference_inputs = {
        # read again only if --verify runs: the conversion itself never holds the whole model
        "read_weights": lambda: read_source_weights(
            source_format, source_folder, base_folder, tower_folder, use_checkpoint_vision_tower, llm_dtype
        ),
        "text_config_fields": text_fields,
        "text_model": settings["language_model"],
        "vision_config": vision_config,
        "settings": settings,
        "sentencepiece_model": tokenizer_folder / "tokenizer.model",
        "source_legacy": source_legacy,
        "image_newline": None if image_newline is None else image_newline.float(),
        "image_mean": processor.image_processor.image_mean,
        "image_std": processor.image_processor.image_std,
    }
    return provenance, reference_inputs
