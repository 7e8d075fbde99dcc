# llava-hf convert SRC DST [--vision_tower PATH_OR_REPO] [--base_model PATH_OR_REPO] [--verify]
"""Original LLaVA checkpoints (and transformers' built-in llava layout) -> a complete llava_hf checkpoint folder.

Source formats, detected from the files (never from the folder name, the original's most confusing habit):
- `original`: a LlavaLlamaForCausalLM checkpoint (the original `llava/model/builder.py` and `llava/train/train.py`): `model.*` Llama keys, `model.mm_projector.*`,
  `.bin` or `.safetensors`, sharded or not. The vision tower comes from `mm_vision_tower` (or `--vision_tower`);
  DeepSpeed-saved `model.vision_tower.vision_tower.*` weights are used when `--use_checkpoint_vision_tower` asks.
- `stage1`: `config.json` + `mm_projector.bin`; the LLM comes from the base model (`_name_or_path` or `--base_model`).
- `lora`: a PEFT adapter + `non_lora_trainables.bin` (the projector); merged into the base model.
- `transformers`: transformers' built-in `llava` layout (llava-hf/* repos), see `convert_transformers_checkpoint.py`.

The destination is written in a temporary sibling folder and renamed into place only after everything (and, with
`--verify`, the numerical check) succeeded: a failure never leaves a half-written DST.
"""

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..utils.io import staged_directory
from .common import VERIFY_QUESTION, ConversionError, read_json, verification_image, write_safetensors

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
}
SUPPORTED_ASPECT_RATIOS = {"pad", "square"}
SELECT_FEATURE_TO_STRATEGY = {"patch": "default", "cls_patch": "full"}
NEW_TOKENS_INIT = (
    "The `<image>` and `<pad>` rows appended to `embed_tokens` and `lm_head` were initialised to the mean of the "
    "existing rows: existing tokens keep exactly the same logits, and a new token's logit is the mean of the "
    "existing logits, so it can never be the greedy choice."
)


@dataclass
class ConvertArguments:
    """Options of `llava-hf convert SRC DST` (SRC and DST are positional)."""

    vision_tower: str | None = field(
        default=None, metadata={"help": "CLIP vision tower folder or repo id; overrides the source's mm_vision_tower."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base LLM folder or repo id for stage-1 and LoRA sources (default: the one they name)."},
    )
    use_checkpoint_vision_tower: bool = field(
        default=False,
        metadata={"help": "Use model.vision_tower.* weights saved in the checkpoint (DeepSpeed runs that tuned CLIP)."},
    )
    chat_template: str = field(
        default="vicuna_v1", metadata={"help": "Chat template of the converted processor (LLaVA-1.5: vicuna_v1)."}
    )
    verify: bool = field(
        default=False,
        metadata={"help": "Run the source computation and the result on one image + prompt; fail past --tolerance."},
    )
    tolerance: float = field(default=1e-3, metadata={"help": "Largest accepted max |Δlogit| (float32) for --verify."})


# ---------------------------------------------------------------------------------------------------------------
# Reading sources


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


def load_state_dict_files(folder: Path) -> dict[str, torch.Tensor]:
    """All weights of a (possibly sharded) `.safetensors` or `.bin` checkpoint; shards named by an index must exist."""
    from safetensors.torch import load_file

    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            files = sorted(set(read_json(index)["weight_map"].values()))
            missing = [name for name in files if not (folder / name).is_file()]
            if missing:
                raise ConversionError(f"{folder} is incomplete: {index_name} lists missing shard(s) {missing}.")
            paths = [folder / name for name in files]
            break
    else:
        paths = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not paths:
        raise ConversionError(
            f"no weights in {folder}: expected model*.safetensors or pytorch_model*.bin (sharded with an index or not)."
        )
    state = {}
    for path in paths:
        if path.suffix == ".safetensors":
            state.update(load_file(path))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


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
    if config.get("model_type") == "llava_hf":
        return "llava_hf"
    if "LlavaForConditionalGeneration" in architectures:
        return "transformers"
    if (
        (folder / "mm_projector.bin").is_file()
        and not any(folder.glob("*.safetensors"))
        and not any(folder.glob("pytorch_model*.bin"))
    ):
        return "stage1"
    if config.get("model_type") in ("llava", "llava_llama") or "LlavaLlamaForCausalLM" in architectures:
        if "mm_vision_tower" not in config:
            raise ConversionError(f"{folder}/config.json looks like LLaVA but has no mm_vision_tower field.")
        return "original"
    if any(name.startswith("Llava") for name in architectures):
        raise ConversionError(
            f"architecture {architectures[0]} is not supported; only Llama-based LLaVA (LlavaLlamaForCausalLM) and "
            "transformers' LlavaForConditionalGeneration checkpoints convert."
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
            f"image_aspect_ratio={aspect!r} is not supported yet (AnyRes / LLaVA-NeXT tiling needs a different model); "
            "only 'pad' (LLaVA-1.5) and 'square' (LLaVA v1) convert."
        )
    merge = config.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        raise ConversionError(f"mm_patch_merge_type={merge!r} is not supported (AnyRes); only 'flat' converts.")
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
    }


def split_original_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """(LLM `model.*`/`lm_head.*`, projector `model.mm_projector.*`, tower `model.vision_tower.vision_tower.*`)."""
    llm, projector, tower = {}, {}, {}
    for name, tensor in state.items():
        if name.startswith("model.mm_projector."):
            projector[name] = tensor
        elif name.startswith("model.vision_tower.vision_tower."):
            tower[name.removeprefix("model.vision_tower.vision_tower.").removeprefix("vision_model.")] = tensor
        elif name.endswith("rotary_emb.inv_freq"):
            continue  # a buffer transformers 4.31 saved; recomputed from rope_theta on load
        else:
            llm[name] = tensor
    return llm, projector, tower


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


# ---------------------------------------------------------------------------------------------------------------
# Building the llava_hf checkpoint


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
    """Llama keys checked against a meta-device LlamaForCausalLM, renamed to `language_model.*` on disk."""
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in LlamaForCausalLM(text_config).state_dict().items()}
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
        tokenizer = AutoTokenizer.from_pretrained(
            tokenizer_folder, legacy=True, extra_special_tokens={"image_token": "<image>"}
        )
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


def build_image_processor_for(tower_folder: Path, vision_config, aspect: str):
    from llava_hf.processing import build_image_processor

    preprocessor = tower_folder / "preprocessor_config.json"
    settings = read_json(preprocessor) if preprocessor.is_file() else {}
    crop = settings.get("crop_size", vision_config.image_size)
    image_size = crop["height"] if isinstance(crop, dict) else crop
    kwargs = {key: tuple(settings[key]) for key in ("image_mean", "image_std") if key in settings}
    return build_image_processor(image_size, aspect, **kwargs)


@dataclass
class ConversionResult:
    """What `convert_checkpoint` wrote and checked; `verification` is None without `verify=True`."""

    destination: Path
    source_format: str
    provenance: dict
    verification: dict | None = None


def convert_checkpoint(source: str | Path, destination: str | Path, arguments: ConvertArguments | None = None):
    """Convert `source` (any supported format, folder or repo id) into a llava_hf checkpoint at `destination`.

    Raises `ConversionError` (nothing written) when the source is incomplete, inconsistent or unsupported, or when
    `verify` finds a max |Δlogit| above `tolerance`.
    """
    arguments = arguments or ConvertArguments()
    destination = Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; remove it or choose another destination.")
    source_folder = resolve_folder(source, "source checkpoint")
    source_format = detect_source_format(source_folder)
    if source_format == "llava_hf":
        raise ConversionError(f"{source_folder} is already a llava_hf checkpoint; nothing to convert.")

    with staged_directory(destination) as staging:  # nothing at `destination` unless everything succeeds
        if source_format == "transformers":
            from .convert_transformers_checkpoint import import_transformers_checkpoint

            provenance = import_transformers_checkpoint(source_folder, staging, arguments.chat_template)
            verification = None
            if arguments.verify:
                from .convert_transformers_checkpoint import verify_against_transformers

                verification = verify_against_transformers(source_folder, staging, arguments.tolerance)
        else:
            provenance, reference_inputs = convert_original(source_folder, source_format, staging, arguments)
            verification = (
                verify_conversion(staging, reference_inputs, arguments.tolerance) if arguments.verify else None
            )
        provenance["source"] = str(source)
        if source_folder.parent.name == "snapshots":  # a Hub download: record which commit was converted
            provenance["source_revision"] = source_folder.name
        from .model_card import write_model_card

        write_model_card(staging, provenance=provenance, verification=verification)
    return ConversionResult(destination, source_format, provenance, verification)


def convert_original(source_folder: Path, source_format: str, staging: Path, arguments: ConvertArguments):
    """Write config, weights, processor and generation config of an original-format source into `staging`."""
    from transformers import GenerationConfig, LlamaConfig

    from llava_hf.modeling import LlavaHfConfig
    from llava_hf.processing import LlavaHfProcessor

    source_config = read_json(source_folder / "config.json")
    settings = check_mm_fields(source_config)

    tower_name = arguments.vision_tower or source_config.get("mm_vision_tower")
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
        base_name = arguments.base_model or (
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

    tower_state = {name: tensor.float() for name, tensor in tower.state_dict().items()}
    tower_origin = str(tower_name)
    if arguments.use_checkpoint_vision_tower:
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
    text_fields = {f: source_config[f] for f in LlamaConfig.__dataclass_fields__ if f in source_config}
    text_fields.pop("dtype", None)
    text_config = LlamaConfig(**text_fields)
    old_vocab = text_config.vocab_size
    llm_disk = llm_checkpoint_keys(llm_state, text_config)
    new_rows = len(tokenizer) - old_vocab
    if new_rows < 0:
        raise ConversionError(f"the tokenizer has {len(tokenizer)} tokens but the LLM only {old_vocab} rows.")
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        llm_disk[name] = add_new_token_rows(llm_disk[name], new_rows)
    text_config.vocab_size = len(tokenizer)
    text_config.pad_token_id = tokenizer.pad_token_id

    config = LlavaHfConfig(
        vision_config=vision_config,
        text_config=text_config,
        image_token_index=tokenizer.image_token_id,
        projector_type=settings["projector_type"],
        vision_feature_layer=settings["vision_feature_layer"],
        vision_feature_select_strategy=settings["vision_feature_select_strategy"],
        image_aspect_ratio=settings["image_aspect_ratio"],
        dtype=str(llm_dtype).removeprefix("torch."),
        architectures=["LlavaHfForConditionalGeneration"],
    )
    weights = dict(llm_disk)
    weights.update(projector_checkpoint_keys(projector_state, settings["projector_type"], config))
    weights.update({"vision_tower." + name: tensor for name, tensor in tower_state.items()})
    weights = {name: tensor.to(llm_dtype) for name, tensor in weights.items()}
    write_safetensors(weights, staging)
    config.save_pretrained(staging)

    processor = LlavaHfProcessor(
        image_processor=build_image_processor_for(tower_folder, vision_config, settings["image_aspect_ratio"]),
        tokenizer=tokenizer,
        chat_template=arguments.chat_template,
        image_seq_length=config.image_seq_length,
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
        "base_model": str(arguments.base_model or base_folder) if base_folder else None,
        "vision_tower": tower_origin,
        "projector_type": settings["projector_type"],
        "image_aspect_ratio": settings["image_aspect_ratio"],
        "vision_feature_layer": settings["vision_feature_layer"],
        "dtype": str(llm_dtype).removeprefix("torch."),
        "new_tokens": {"<image>": tokenizer.image_token_id, "<pad>": tokenizer.pad_token_id},
        "new_token_init": NEW_TOKENS_INIT,
        "source_tokenizer_legacy": source_legacy,
        "chat_template": arguments.chat_template,
    }
    reference_inputs = {
        "llm_state": llm_state,
        "text_config_fields": text_fields,
        "projector_state": projector_state,
        # the original ran the tower in the checkpoint's dtype too (model.to(float16)), so compare with those values
        "tower_state": {name: tensor.to(llm_dtype).float() for name, tensor in tower_state.items()},
        "vision_config": vision_config,
        "settings": settings,
        "sentencepiece_model": tokenizer_folder / "tokenizer.model",
        "source_legacy": source_legacy,
        "image_mean": processor.image_processor.image_mean,
        "image_std": processor.image_processor.image_std,
    }
    return provenance, reference_inputs


# ---------------------------------------------------------------------------------------------------------------
# Verification


@torch.no_grad()
def verify_conversion(converted: Path, reference: dict, tolerance: float) -> dict:
    """Original computation (reference.py) vs the converted checkpoint on one image + prompt, in float32.

    Returns {"max_abs_logit_diff", "greedy_agree", "token_ids_identical", "positions", "tolerance"}; raises
    ConversionError when the token ids differ or the logits differ by more than `tolerance`.
    """
    from transformers import AutoProcessor, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    from llava_hf.modeling import LlavaHfForConditionalGeneration

    from .reference import (
        IMAGE_PLACEHOLDER_ID,
        OriginalSentencePieceTokenizer,
        original_forward,
        original_pixel_values,
        original_tokenizer_image_token,
    )

    processor = AutoProcessor.from_pretrained(converted)
    model = LlavaHfForConditionalGeneration.from_pretrained(converted, dtype=torch.float32).eval()
    image = verification_image()
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": VERIFY_QUESTION}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    ours = processor(images=image, text=prompt, return_tensors="pt")

    settings = reference["settings"]
    image_size = reference["vision_config"].image_size
    if reference["sentencepiece_model"].is_file():
        tokenizer = OriginalSentencePieceTokenizer(reference["sentencepiece_model"], legacy=reference["source_legacy"])
        bos = processor.tokenizer.bos_token
        original_ids = original_tokenizer_image_token(tokenizer, prompt.removeprefix(bos))
    else:  # no SentencePiece model to tokenize with independently: compare the computation on our ids
        ids = ours.input_ids[0].tolist()
        first = ids.index(model.config.image_token_id)
        original_ids = ids[:first] + [IMAGE_PLACEHOLDER_ID] + ids[first + model.config.image_seq_length :]
    expanded = []
    for token in original_ids:
        expanded.extend([model.config.image_token_id] * model.config.image_seq_length if token == -200 else [token])
    token_ids_identical = expanded == ours.input_ids[0].tolist()

    language_model = LlamaForCausalLM(LlamaConfig(**reference["text_config_fields"])).eval()
    language_model.load_state_dict({k: v.float() for k, v in reference["llm_state"].items()})
    tower = CLIPVisionModel(reference["vision_config"]).eval()
    tower.load_state_dict(reference["tower_state"])
    pixel_values = original_pixel_values(
        image, image_size, reference["image_mean"], reference["image_std"], settings["image_aspect_ratio"]
    )
    reference_logits = original_forward(
        language_model,
        tower,
        {k: v.float() for k, v in reference["projector_state"].items()},
        settings["projector_type"],
        settings["vision_feature_layer"],
        "patch" if settings["vision_feature_select_strategy"] == "default" else "cls_patch",
        original_ids,
        pixel_values,
    )[0]
    result = {"token_ids_identical": token_ids_identical, "tolerance": tolerance}
    if not token_ids_identical:
        raise ConversionError(
            f"verification failed: the converted processor's token ids differ from the original tokenization "
            f"({len(expanded)} vs {ours.input_ids.shape[1]} ids); the converted model would see other inputs."
        )
    logits = model(**ours).logits[0]
    old_vocab = reference_logits.shape[-1]
    result["max_abs_logit_diff"] = (logits[:, :old_vocab] - reference_logits).abs().max().item()
    result["pixel_values_max_abs_diff"] = (ours.pixel_values - pixel_values).abs().max().item()
    result["greedy_agree"] = bool(torch.equal(logits.argmax(-1), reference_logits.argmax(-1)))
    result["positions"] = logits.shape[0]
    if result["max_abs_logit_diff"] > tolerance or not result["greedy_agree"]:
        raise ConversionError(
            f"verification failed: max |Δlogit| = {result['max_abs_logit_diff']:.3g} (tolerance {tolerance}), greedy "
            f"tokens agree: {result['greedy_agree']}."
        )
    return result


# ---------------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ConvertArguments, prog="llava-hf convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="original LLaVA / stage-1 / LoRA / llava-hf checkpoint folder or repo id")
    parser.add_argument("destination", help="folder to create (must not exist)")
    arguments, positional = parser.parse_args_into_dataclasses(args=argv)
    try:
        result = convert_checkpoint(positional.source, positional.destination, arguments)
    except ConversionError as error:
        print(f"llava-hf convert: {error}", file=sys.stderr)
        return 1
    print(f"converted {result.source_format} checkpoint {positional.source} -> {result.destination}")
    if result.verification is not None:
        check = result.verification
        print(
            f"verified: max |Δlogit| = {check['max_abs_logit_diff']:.3g} over {check['positions']} positions, "
            f"greedy tokens agree: {check['greedy_agree']}, token ids identical: {check['token_ids_identical']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
