"""Training data: every input format -> one row schema (`formats`), the preflight check (`check`) and the masking,
padding and packing collator (`collator`); `synthetic` makes a small learnable dataset for smoke tests."""

from .check import CheckReport, DataCheckError, check_rows, preflight
from .collator import IGNORE_INDEX, LlavaCollator, SampleError, padding_fraction
from .formats import ROW_FEATURES, convert_llava_json, load_llava_json, load_rows, to_conversation

__all__ = [
    "IGNORE_INDEX",
    "ROW_FEATURES",
    "CheckReport",
    "DataCheckError",
    "LlavaCollator",
    "SampleError",
    "check_rows",
    "convert_llava_json",
    "load_llava_json",
    "load_rows",
    "padding_fraction",
    "preflight",
    "to_conversation",
]
