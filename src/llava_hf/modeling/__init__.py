"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these)."""

from .configuration_llava import LlavaHfConfig
from .modeling_llava import (
    CHECKPOINT_KEY_MAPPING,
    LlavaHfForConditionalGeneration,
    LlavaHfModel,
    LlavaHfMultiModalProjector,
    LlavaHfPreTrainedModel,
)

__all__ = [
    "CHECKPOINT_KEY_MAPPING",
    "LlavaHfConfig",
    "LlavaHfForConditionalGeneration",
    "LlavaHfModel",
    "LlavaHfMultiModalProjector",
    "LlavaHfPreTrainedModel",
]
