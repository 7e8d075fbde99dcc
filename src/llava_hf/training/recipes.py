"""How the LLaVA stages train what `arguments.STAGES` says they train: freezing, per-component learning rates,
LoRA/QLoRA configs, the stage-1 projector file, and building a model from a vision tower + a language model (where
stage 1 starts). Under QLoRA the vision tower, the projector and lm_head stay out of quantization.
"""

import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..utils.io import atomic_write
from ..utils.loading import QUANTIZATION_SKIP_MODULES, bitsandbytes_config
from .arguments import LORA_TARGET_MODULES

logger = logging.getLogger(__name__)

# Kept in full precision under QLoRA: bitsandbytes' default skip list is only lm_head, which would quantize the vision
# tower and the projector (transformers' BitsAndBytesConfig: `llm_int8_skip_modules`, default: the output layer).
QLORA_SKIP_MODULES = QUANTIZATION_SKIP_MODULES  # the language model only: see llava_hf.utils.loading
PROJECTOR_FILE = "projector.safetensors"
COMPONENTS = ("vision_tower", "multi_modal_projector", "language_model")


def component_of(parameter_name: str) -> str:
    """Which LLaVA component a parameter belongs to; lm_head (and LoRA weights inside the LLM) count as language_model."""
    for component in ("vision_tower", "multi_modal_projector"):
        if f"{component}." in parameter_name:
            return component
    return "language_model"


def set_trainable(
    model,
    train_vision_tower: bool = False,
    train_projector: bool = True,
    train_language_model: bool = False,
) -> dict[str, int]:
    """Set `requires_grad` per component (lm_head goes with the language model); returns trainable counts."""
    base = _unwrap(model).model  # LlavaHfModel
    base.vision_tower.requires_grad_(train_vision_tower)
    base.multi_modal_projector.requires_grad_(train_projector)
    base.language_model.requires_grad_(train_language_model)
    _unwrap(model).lm_head.requires_grad_(train_language_model)
    if getattr(base, "image_newline", None) is not None:
        # LLaVA-1.6's newline trains with the LLM, at its LR: the original's projector LR matches "mm_projector" only
        base.image_newline.requires_grad_(train_language_model)
    return trainable_counts(model)


def unfreeze_vision_layers(model, num_layers: int) -> None:
    """Train the last `num_layers` vision layers that feed the projector (works on a PEFT-wrapped model too).

    Counted back from the deepest layer whose output reaches the projector: with LLaVA's layer -2 the tower's last
    layer never receives a gradient, so "the last N layers" are the N layers that produce hidden state -2.
    """
    llava = _unwrap(model)
    layers = llava.model.vision_tower.encoder.layers
    feature_layers = llava.config.vision_feature_layer
    feature_layers = [feature_layers] if isinstance(feature_layers, int) else list(feature_layers)
    deepest = max(index if index >= 0 else len(layers) + 1 + index for index in feature_layers)
    if not 0 < num_layers <= deepest:
        raise ValueError(
            f"unfreeze_vision_layers={num_layers}, but {deepest} vision layers feed the projector "
            f"(vision_feature_layer={llava.config.vision_feature_layer})."
        )
    for layer in layers[deepest - num_layers : deepest]:
        layer.requires_grad_(True)


def trainable_counts(model) -> dict[str, int]:
    counts = dict.fromkeys(COMPONENTS, 0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            counts[component_of(name)] += parameter.numel()
    return counts


def parameter_groups(
    model, learning_rate: float, weight_decay: float, decay_parameter_names, learning_rates: dict[str, float | None]
) -> list[dict]:
    """Optimizer groups: one per (component, decay/no-decay), each with its component's LR (default `learning_rate`).

    `learning_rates` maps component names (`vision_tower`, `multi_modal_projector`, `language_model`) to an LR or None.
    """
    groups: dict[tuple[str, bool], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((component_of(name), name in decay_parameter_names), []).append(parameter)
    return [
        {
            "params": parameters,
            "lr": learning_rate if learning_rates.get(component) is None else learning_rates[component],
            "weight_decay": weight_decay if decays else 0.0,
            "name": f"{component}/{'decay' if decays else 'no_decay'}",
        }
        for (component, decays), parameters in sorted(groups.items())
    ]


def projector_state_dict(model) -> dict[str, torch.Tensor]:
    """The projector's weights under the on-disk names of transformers' llava (`multi_modal_projector.linear_1.weight`)."""
    projector = _unwrap(model).model.multi_modal_projector
    return {
        f"multi_modal_projector.{key}": value.detach().cpu().contiguous()
        for key, value in projector.state_dict().items()
    }


def save_projector(model, output_dir: str | Path) -> Path:
    """Write the stage-1 result, the projector alone, to `output_dir/projector.safetensors` (atomically)."""
    config = _unwrap(model).config
    metadata = {"projector_type": config.projector_type, "format": "pt"}
    return atomic_write(Path(output_dir) / PROJECTOR_FILE, save(projector_state_dict(model), metadata=metadata))


def _original_projector_keys(state: dict) -> dict:
    """Rename the original LLaVA `mm_projector.bin` keys (`model.mm_projector.0.weight`, ...) to ours."""
    renamed = {}
    for key, value in state.items():
        suffix = key.split("mm_projector.", 1)[1]  # "0.weight" (mlp) or "weight" (linear)
        if suffix[0].isdigit():
            index, parameter = suffix.split(".", 1)
            # Sequential(Linear, GELU, Linear, ...): Linear modules sit at even indices 0, 2, 4 -> linear_1, 2, 3.
            renamed[f"multi_modal_projector.linear_{int(index) // 2 + 1}.{parameter}"] = value
        else:
            renamed[f"multi_modal_projector.linear_1.{suffix}"] = value
    return renamed


def load_projector(model, path: str | Path) -> None:
    """Load a stage-1 projector (our `projector.safetensors`, a folder holding one, or the original `mm_projector.bin`).

    Under DeepSpeed ZeRO-3 the parameters of a model built inside `zero.Init` are partitioned; they are gathered,
    written on rank 0 and re-partitioned (`deepspeed.zero.GatheredParameters`). Loading into a model created before
    the trainer, which is what `train()` does, needs no gathering: partitioning happens when the trainer starts.
    """
    path = Path(path)
    if path.is_dir():
        path = path / PROJECTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no projector at {path}; pass the stage-1 output folder or its {PROJECTOR_FILE}.")
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = _original_projector_keys(torch.load(path, map_location="cpu", weights_only=True))
    projector = _unwrap(model).model.multi_modal_projector
    prefix = "multi_modal_projector."
    state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    expected = {key: tuple(value.shape) for key, value in _full_shapes(projector).items()}
    found = {key: tuple(value.shape) for key, value in state.items()}
    if expected != found:
        raise ValueError(
            f"the projector in {path} does not fit this model: file has {found}, model expects {expected}. Use the "
            "same projector_type, vision tower and language model as stage 1."
        )
    partitioned = [parameter for parameter in projector.parameters() if hasattr(parameter, "ds_id")]
    if partitioned:
        import deepspeed

        with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0):
            if torch.distributed.get_rank() == 0:
                _copy_into(projector, state)
    else:
        _copy_into(projector, state)
    logger.info(f"loaded the projector from {path}")


def _full_shapes(module) -> dict:
    # ZeRO-3 partitions leave `ds_shape` with the real shape on each parameter.
    return {name: getattr(parameter, "ds_shape", parameter) for name, parameter in module.named_parameters()}


def _copy_into(module, state: dict) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            parameter.copy_(state[name].to(parameter.dtype))


def _unwrap(model):
    """The LlavaHfForConditionalGeneration inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def lora_config(r: int, alpha: int, dropout: float, target_modules: str = LORA_TARGET_MODULES):
    """LoRA on the language model; the projector is trained in full and saved with the adapter (`modules_to_save`),
    as the original saved it next to the adapter (`non_lora_trainables.bin`, original llava/train/train.py)."""
    from peft import LoraConfig

    return LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=["multi_modal_projector"],
        task_type="CAUSAL_LM",
    )


def qlora_quantization_config(compute_dtype: torch.dtype = torch.bfloat16):
    """4-bit NF4 with double quantization (original llava/train/train.py, `--bits 4`) for the language model only;
    the one BitsAndBytes policy of `llava_hf.utils.loading`."""
    return bitsandbytes_config(4, compute_dtype)


def tower_normalisation(vision_tower: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std the vision tower was trained with (SigLIP: 0.5/0.5, CLIP: OpenAI's), read from its
    preprocessor config; CLIP's values, with a warning, for a folder that has none."""
    from transformers import AutoImageProcessor
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

    try:
        source = AutoImageProcessor.from_pretrained(vision_tower)
        return tuple(source.image_mean), tuple(source.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        logger.warning(f"{vision_tower} has no image preprocessor config; normalising with CLIP's mean and std.")
        return tuple(OPENAI_CLIP_MEAN), tuple(OPENAI_CLIP_STD)


def load_tokenizer_with_image_token(name_or_path: str, image_token: str = "<image>"):
    """The language model's tokenizer with `image_token` as a named special token (`tokenizer.image_token`,
    `tokenizer.image_token_id`, saved with the tokenizer); one that already names an image token is returned as is.

    Real LLM tokenizers (Vicuna, Llama, Mistral, Qwen2) have no `<image>`. transformers 5 registers a model-specific
    special token when the tokenizer is loaded (`from_pretrained(..., image_token="<image>")`, the way its own VLM
    tokenizers declare theirs); `add_special_tokens` accepts only a list for `extra_special_tokens`, which would leave
    the token unnamed. A new token gets the next id, so the embeddings must grow to `len(tokenizer)`.
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if getattr(tokenizer, "image_token", None) is not None:
        return tokenizer
    return AutoTokenizer.from_pretrained(name_or_path, image_token=image_token)


def build_from_parts(
    vision_tower: str,
    language_model: str,
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    image_aspect_ratio: str = "pad",
    chat_template: str | None = None,
    dtype: torch.dtype | None = None,
    quantization_config=None,
):
    """A new LLaVA model from a pretrained vision tower and a pretrained causal LM, with a freshly initialised
    projector (where stage 1 starts), and its processor.

    `<image>` is added to the tokenizer as a special token if missing (the embedding matrix grows by one row, at
    the mean of the others);
    a tokenizer without a pad token pads with `unk` (LLaVA-1.5's choice) or else `eos`. `quantization_config`
    (QLoRA) applies to the language model only; the vision tower and the projector stay in `dtype`.
    `image_aspect_ratio="anyres"` builds LLaVA-1.6 (`LlavaHfNext*`: the released pinpoints scaled to the tower's size,
    "spatial_unpad", `image_newline` drawn as the original draws it). Returns `(model, processor)`; the processor
    alone, without loading any weights, is `build_processor_from_parts`.
    """
    from transformers import AutoModel, AutoModelForCausalLM

    from ..modeling import LlavaHfForConditionalGeneration, LlavaHfNextForConditionalGeneration
    from ..modeling.modeling_llava import LlavaHfMultiModalProjector

    dtype = dtype or torch.float32  # not the checkpoints' own dtypes: Vicuna is fp16 on disk, CLIP fp32
    processor = build_processor_from_parts(
        vision_tower,
        language_model,
        projector_type,
        vision_feature_layer,
        vision_feature_select_strategy,
        image_aspect_ratio,
        chat_template,
    )
    tokenizer = processor.tokenizer
    language = AutoModelForCausalLM.from_pretrained(
        language_model, dtype=dtype, quantization_config=quantization_config
    )
    known_rows = language.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > known_rows:
        # New rows (`<image>`) start at the mean of the known ones. Deterministic, unlike transformers' sampled
        # `mean_resizing`, so the same parts always give the same model (a LoRA base can be rebuilt exactly).
        language.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for embeddings in (language.get_input_embeddings(), language.get_output_embeddings()):
                embeddings.weight[known_rows:] = embeddings.weight[:known_rows].mean(dim=0)
    language.config.pad_token_id = tokenizer.pad_token_id

    config = _parts_config(
        vision_tower,
        language.config,
        tokenizer,
        projector_type,
        vision_feature_layer,
        vision_feature_select_strategy,
        image_aspect_ratio,
    )
    vision = AutoModel.from_pretrained(vision_tower, dtype=dtype)
    vision_state = (vision.vision_model if hasattr(vision, "vision_model") else vision).state_dict()

    anyres = image_aspect_ratio == "anyres"
    # Build the shell on the meta device (no second copy of a 7B LLM in memory), then move the loaded towers in.
    with torch.device("meta"):
        model = (LlavaHfNextForConditionalGeneration if anyres else LlavaHfForConditionalGeneration)(config)
    model.model.language_model = language.model
    model.lm_head = language.lm_head
    model.model.vision_tower = AutoModel.from_config(config.vision_config, dtype=dtype)
    model.model.vision_tower.load_state_dict(vision_state)
    model.model.vision_tower.requires_grad_(False)
    model.model.multi_modal_projector = LlavaHfMultiModalProjector(config).to(dtype)
    if anyres:  # N(0, 1/sqrt(hidden)), as the original creates it
        hidden = config.text_config.hidden_size
        model.model.image_newline = torch.nn.Parameter((torch.randn(hidden) / hidden**0.5).to(dtype))
    on_meta = [name for name, tensor in [*model.named_parameters(), *model.named_buffers()] if tensor.is_meta]
    if on_meta:
        raise RuntimeError(f"tensors left on the meta device after assembling the model: {on_meta[:5]}")
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, processor


def build_processor_from_parts(
    vision_tower: str,
    language_model: str,
    projector_type: str = "mlp2x_gelu",
    vision_feature_layer: int = -2,
    vision_feature_select_strategy: str = "default",
    image_aspect_ratio: str = "pad",
    chat_template: str | None = None,
):
    """The processor `build_from_parts` returns with the same arguments, from the parts' configs and tokenizer only
    (no weights loaded): what training needs to check its data before it loads the model."""
    from transformers import AutoConfig

    from ..processing import LlavaHfNextProcessor, LlavaHfProcessor, build_image_processor, build_next_image_processor

    tokenizer = load_tokenizer_with_image_token(language_model)
    if tokenizer.pad_token is None:
        # The original sets pad = unk for its v1 and `plain` recipes (llava/train/train.py, `tokenizer.pad_token =
        # tokenizer.unk_token`): Vicuna and Mistral ship no pad. Qwen2 has a pad but no unk; eos is the last resort.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    config = _parts_config(
        vision_tower,
        AutoConfig.from_pretrained(language_model),
        tokenizer,
        projector_type,
        vision_feature_layer,
        vision_feature_select_strategy,
        image_aspect_ratio,
    )
    normalisation = tower_normalisation(vision_tower)
    if image_aspect_ratio == "anyres":
        return LlavaHfNextProcessor(
            image_processor=build_next_image_processor(
                config.vision_config.image_size, config.image_grid_pinpoints, *normalisation
            ),
            tokenizer=tokenizer,
            chat_template=chat_template,
            mm_patch_merge_type=config.mm_patch_merge_type,
            **config.image_token_settings,
        )
    return LlavaHfProcessor(
        image_processor=build_image_processor(config.vision_config.image_size, image_aspect_ratio, *normalisation),
        tokenizer=tokenizer,
        chat_template=chat_template,
        **config.image_token_settings,
    )


def _parts_config(
    vision_tower,
    text_config,
    tokenizer,
    projector_type,
    vision_feature_layer,
    vision_feature_select_strategy,
    image_aspect_ratio,
):
    """The LLaVA config of a model built from parts (LLaVA-1.6's for `image_aspect_ratio="anyres"`)."""
    from transformers import AutoConfig

    from ..modeling import LlavaHfConfig, LlavaHfNextConfig

    vision_source_config = AutoConfig.from_pretrained(vision_tower)
    anyres = image_aspect_ratio == "anyres"
    return (LlavaHfNextConfig if anyres else LlavaHfConfig)(
        vision_config=getattr(vision_source_config, "vision_config", vision_source_config),
        text_config=text_config,
        image_token_index=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
        projector_type=projector_type,
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        **({} if anyres else {"image_aspect_ratio": image_aspect_ratio}),
    )


__all__ = [
    "LORA_TARGET_MODULES",
    "PROJECTOR_FILE",
    "QLORA_SKIP_MODULES",
    "build_from_parts",
    "build_processor_from_parts",
    "component_of",
    "load_tokenizer_with_image_token",
    "load_projector",
    "lora_config",
    "parameter_groups",
    "projector_state_dict",
    "qlora_quantization_config",
    "save_projector",
    "set_trainable",
    "trainable_counts",
    "unfreeze_vision_layers",
]
