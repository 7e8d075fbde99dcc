"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these).

Importing this package registers them the ordinary way: the `llava_hf` and `llava_hf_next` config and model classes
with transformers' Auto classes, and the on-disk key mappings (`CHECKPOINT_KEY_MAPPING`, ...) that `from_pretrained` and `save_pretrained`
apply, so every way to our classes loads and saves transformers' built-in llava key layout.

- `configuration_llava.py`  LlavaHfConfig: towers, projector type, feature layer/selection, aspect ratio, image_seq_length
- `modeling_llava.py`       projector -> PreTrainedModel -> Model (vision tower, splice, count check) -> ForConditionalGeneration
- `configuration_llava_next.py`  LlavaHfNextConfig: LLaVA-1.6 AnyRes (grid pinpoints, patch merge type)
- `modeling_llava_next.py`       LlavaHfNext{Model,ForConditionalGeneration}: tiles, unpad, image_newline
"""

from .configuration_llava import LlavaHfConfig
from .configuration_llava_next import LlavaHfNextConfig
from .modeling_llava import (
    BASE_MODEL_KEY_MAPPING,
    CHECKPOINT_KEY_MAPPING,
    LlavaHfCausalLMOutputWithPast,
    LlavaHfForConditionalGeneration,
    LlavaHfModel,
    LlavaHfModelOutputWithPast,
    LlavaHfMultiModalProjector,
    LlavaHfPreTrainedModel,
)
from .modeling_llava_next import (
    NEXT_CHECKPOINT_KEY_MAPPING,
    LlavaHfNextForConditionalGeneration,
    LlavaHfNextModel,
)


def _register_with_transformers() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    # (config, backbone, head model) of LLaVA-1.5 and LLaVA-1.6 (AnyRes)
    families = (
        (LlavaHfConfig, LlavaHfModel, LlavaHfForConditionalGeneration),
        (LlavaHfNextConfig, LlavaHfNextModel, LlavaHfNextForConditionalGeneration),
    )
    for config_class, backbone, head in families:
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        AutoModel.register(config_class, backbone, exist_ok=True)
        AutoModelForImageTextToText.register(config_class, head, exist_ok=True)
        AutoModelForMultimodalLM.register(config_class, head, exist_ok=True)  # the registry behind "any-to-any"
    # Same on-disk layout as transformers' built-in llava / llava_next (`language_model.model.*`, `vision_tower.*`,
    # `image_newline`, ...): these mappings turn it into our in-memory names on load and back on save, so checkpoints
    # load both ways. The backbone ones are keyed by class name, so they also apply to the `model` inside the head
    # model (transformers looks up class names before model types, exactly as for its `LlavaModel`).
    mappings = {
        LlavaHfConfig.model_type: CHECKPOINT_KEY_MAPPING,
        LlavaHfNextConfig.model_type: {**NEXT_CHECKPOINT_KEY_MAPPING, **CHECKPOINT_KEY_MAPPING},
        LlavaHfModel.__name__: BASE_MODEL_KEY_MAPPING,
        LlavaHfNextModel.__name__: BASE_MODEL_KEY_MAPPING,
    }
    for key, mapping in mappings.items():
        register_checkpoint_conversion_mapping(
            key,
            [WeightRenaming(source_patterns=disk, target_patterns=memory) for disk, memory in mapping.items()],
            overwrite=True,
        )


_register_with_transformers()

__all__ = [
    "BASE_MODEL_KEY_MAPPING",
    "CHECKPOINT_KEY_MAPPING",
    "LlavaHfConfig",
    "LlavaHfCausalLMOutputWithPast",
    "LlavaHfForConditionalGeneration",
    "LlavaHfModel",
    "LlavaHfModelOutputWithPast",
    "LlavaHfMultiModalProjector",
    "LlavaHfPreTrainedModel",
    "LlavaHfNextConfig",
    "LlavaHfNextForConditionalGeneration",
    "LlavaHfNextModel",
    "NEXT_CHECKPOINT_KEY_MAPPING",
]
