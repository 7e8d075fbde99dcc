"""LLaVA model and config classes (no other llava_hf imports: everything else builds on these).

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
