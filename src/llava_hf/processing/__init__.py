"""Image preprocessing, the processor and LLaVA's chat templates.

- `image_processing_llava.py`  LLaVA's RGB conversion (alpha, EXIF, 16-bit) + LlavaHfImageProcessor (pad/square, exact)
- `processing_llava.py`        LlavaHfProcessor: `<image>` expansion, per-sample count checks, templates by name
- `processing_llava_next.py`   LlavaHfNextProcessor: LLaVA-1.6 AnyRes tiles (built-in PIL processor, exact) + token counts
- `chat_templates`             vicuna_v1, llava_v1, llava_llama_2, mistral_instruct, chatml_direct, plain (`.jinja`)
- `template_rendering.py`      vicuna_v1 and plain rendered in Python with their answer spans (the data check), as Jinja does
"""

from .image_processing_llava import IMAGE_ASPECT_RATIOS, LlavaHfImageProcessor, build_image_processor, to_rgb
from .processing_llava import (
    CHAT_TEMPLATE_NAMES,
    DEFAULT_CHAT_TEMPLATE,
    LlavaHfProcessor,
    get_chat_template,
    resolve_chat_template,
)
from .processing_llava_next import LlavaHfNextProcessor, anyres_num_image_tokens, build_next_image_processor

__all__ = [
    "CHAT_TEMPLATE_NAMES",
    "DEFAULT_CHAT_TEMPLATE",
    "IMAGE_ASPECT_RATIOS",
    "LlavaHfImageProcessor",
    "LlavaHfProcessor",
    "LlavaHfNextProcessor",
    "anyres_num_image_tokens",
    "build_next_image_processor",
    "build_image_processor",
    "get_chat_template",
    "resolve_chat_template",
    "to_rgb",
]
