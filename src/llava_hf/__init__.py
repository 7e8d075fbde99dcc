"""llava_hf: LLaVA as Hugging Face-native classes.

Importing the package registers the `llava_hf` model type with transformers' Auto classes, so checkpoint folders and
Hub repos load with `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText`, `AutoProcessor` and
`pipeline("image-text-to-text")`. The public names `LlavaConfig`, `LlavaForConditionalGeneration` and `LlavaProcessor`
are aliases of classes whose own `__name__`s (`LlavaHf*`) never collide with transformers' built-ins, because saved
JSON files refer to classes by name and transformers resolves its own names first.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
)
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming

from .modeling import (
    BASE_MODEL_KEY_MAPPING,
    CHECKPOINT_KEY_MAPPING,
    LlavaHfConfig,
    LlavaHfForConditionalGeneration,
    LlavaHfModel,
    LlavaHfMultiModalProjector,
    LlavaHfPreTrainedModel,
)
from .processing import (
    CHAT_TEMPLATE_NAMES,
    LlavaHfImageProcessor,
    LlavaHfProcessor,
    build_image_processor,
    get_chat_template,
    to_rgb,
)

__version__ = "0.1.0"

LlavaConfig = LlavaHfConfig
LlavaForConditionalGeneration = LlavaHfForConditionalGeneration
LlavaModel = LlavaHfModel
LlavaProcessor = LlavaHfProcessor

AutoConfig.register(LlavaHfConfig.model_type, LlavaHfConfig, exist_ok=True)
AutoModel.register(LlavaHfConfig, LlavaHfModel, exist_ok=True)
AutoModelForImageTextToText.register(LlavaHfConfig, LlavaHfForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(LlavaHfConfig, LlavaHfForConditionalGeneration, exist_ok=True)
AutoProcessor.register(LlavaHfConfig, LlavaHfProcessor, exist_ok=True)
# One class for both backends: with torchvision installed, AutoImageProcessor would otherwise reload a saved
# processor as the torchvision one, whose bicubic resize does not give the original's pixel values.
AutoImageProcessor.register(
    LlavaHfConfig,
    image_processor_classes={"pil": LlavaHfImageProcessor, "torchvision": LlavaHfImageProcessor},
    exist_ok=True,
)

# Same on-disk layout as transformers' built-in llava (`language_model.model.*`, `vision_tower.*`, ...): this mapping
# turns it into our in-memory names on load and back on save, so checkpoints load both ways without missing keys.
register_checkpoint_conversion_mapping(
    LlavaHfConfig.model_type,
    [WeightRenaming(source_patterns=disk, target_patterns=memory) for disk, memory in CHECKPOINT_KEY_MAPPING.items()],
    overwrite=True,
)
# Keyed by class name, so it also applies to the `model` inside the head model (transformers looks up class names
# before model types, exactly as for its `LlavaModel`).
register_checkpoint_conversion_mapping(
    LlavaHfModel.__name__,
    [WeightRenaming(source_patterns=disk, target_patterns=memory) for disk, memory in BASE_MODEL_KEY_MAPPING.items()],
    overwrite=True,
)

__all__ = [
    "CHAT_TEMPLATE_NAMES",
    "LlavaConfig",
    "LlavaForConditionalGeneration",
    "LlavaHfConfig",
    "LlavaHfForConditionalGeneration",
    "LlavaHfImageProcessor",
    "LlavaHfModel",
    "LlavaHfMultiModalProjector",
    "LlavaHfPreTrainedModel",
    "LlavaHfProcessor",
    "LlavaModel",
    "LlavaProcessor",
    "build_image_processor",
    "get_chat_template",
    "to_rgb",
]
