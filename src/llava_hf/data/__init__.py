"""Training data: every input format -> one row schema (`formats`), the preflight check (`check`) and the masking,
padding and packing collator (`collator`); `synthetic` makes a small learnable dataset for smoke tests."""

from ..utils.lazy import lazy_attributes

# public name -> submodule, loaded on first use: `llava-hf data --help` (data/cli.py) needs no torch or datasets.
_LAZY_ATTRIBUTES = {
    "CheckReport": "check",
    "DataCheckError": "check",
    "check_rows": "check",
    "preflight": "check",
    "IGNORE_INDEX": "collator",
    "LlavaCollator": "collator",
    "SampleError": "collator",
    "padding_fraction": "collator",
    "ROW_FEATURES": "formats",
    "convert_llava_json": "formats",
    "load_llava_json": "formats",
    "load_rows": "formats",
    "to_conversation": "formats",
}
__all__ = sorted(_LAZY_ATTRIBUTES)
__getattr__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)
