"""Image preprocessing, the processor and LLaVA's chat templates."""

from .image_processing_llava import IMAGE_ASPECT_RATIOS, LlavaHfImageProcessor, build_image_processor, to_rgb
from .processing_llava import (
    CHAT_TEMPLATE_NAMES,
    DEFAULT_CHAT_TEMPLATE,
    LlavaHfProcessor,
    get_chat_template,
    resolve_chat_template,
)

__all__ = [
    "CHAT_TEMPLATE_NAMES",
    "DEFAULT_CHAT_TEMPLATE",
    "IMAGE_ASPECT_RATIOS",
    "LlavaHfImageProcessor",
    "LlavaHfProcessor",
    "build_image_processor",
    "get_chat_template",
    "resolve_chat_template",
    "to_rgb",
]
