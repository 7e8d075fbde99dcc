"""Training data: every input format -> one row schema, the preflight check and the masking collator.

- `formats.py`           LLaVA JSON / TRL rows / the_cauldron -> one row schema with lazy images; LLaVA JSON -> Hub-ready dataset
- `check.py`             preflight check of training data (summary table, offending ids, refuse or skip)
- `collator.py`          masking collator (answers + end tokens only), padded or padding-free
- `packed_attention.py`  SDPA per packed sample for padding-free batches
- `synthetic.py`         a small learnable coloured-shapes dataset for smoke tests, tiny recipes and benchmarks; the
                         shape painter the demo's world draws with
- `data_command.py`      `llava-hf data check|convert`
"""

from ..utils.lazy import lazy_attributes

# public name -> submodule, loaded on first use: `llava-hf data --help` (data_command.py) needs no torch or datasets.
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
