"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these).

Importing this package registers them the ordinary way: the `llava_hf` config and model classes with transformers'
Auto classes, and the on-disk key mapping (`CHECKPOINT_KEY_MAPPING`) that `from_pretrained` and `save_pretrained`
apply, so every way to our classes loads and saves transformers' built-in llava key layout.

- `configuration_llava.py`  LlavaHfConfig: towers, projector type, feature layer/selection, aspect ratio, image_seq_length
- `modeling_llava.py`       projector -> PreTrainedModel -> Model (vision tower, splice, count check) -> ForConditionalGeneration
"""

from .configuration_llava import LlavaHfConfig
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


def _register_with_transformers() -> None:
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoModelForMultimodalLM
    from transformers.conversion_mapping import register_checkpoint_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    AutoConfig.register(LlavaHfConfig.model_type, LlavaHfConfig, exist_ok=True)
    AutoModel.register(LlavaHfConfig, LlavaHfModel, exist_ok=True)
    AutoModelForImageTextToText.register(LlavaHfConfig, LlavaHfForConditionalGeneration, exist_ok=True)
    # a separate registry behind pipeline("any-to-any")
    AutoModelForMultimodalLM.register(LlavaHfConfig, LlavaHfForConditionalGeneration, exist_ok=True)
    # Same on-disk layout as transformers' built-in llava (`language_model.model.*`, `vision_tower.*`, ...): this
    # mapping turns it into our in-memory names on load and back on save, so checkpoints load both ways.
    register_checkpoint_conversion_mapping(
        LlavaHfConfig.model_type,
        [
            WeightRenaming(source_patterns=disk, target_patterns=memory)
            for disk, memory in CHECKPOINT_KEY_MAPPING.items()
        ],
        overwrite=True,
    )
    # Keyed by class name, so it also applies to the `model` inside the head model (transformers looks up class names
    # before model types, exactly as for its `LlavaModel`).
    register_checkpoint_conversion_mapping(
        LlavaHfModel.__name__,
        [
            WeightRenaming(source_patterns=disk, target_patterns=memory)
            for disk, memory in BASE_MODEL_KEY_MAPPING.items()
        ],
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
]
