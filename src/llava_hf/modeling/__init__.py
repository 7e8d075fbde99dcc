"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these)."""

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
