"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these).

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
