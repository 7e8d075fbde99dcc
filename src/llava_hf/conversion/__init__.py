"""Checkpoint conversion: original LLaVA / stage-1 / LoRA / transformers' llava -> llava_hf, llava_hf -> transformers,
bitsandbytes 4-bit / 8-bit copies that stock transformers loads (`quantize`), and the model card written next to
every converted checkpoint."""

from ..utils.lazy import lazy_attributes

# public name -> submodule, loaded on first use: `llava-hf convert --help` (conversion/cli.py) needs no torch.
_LAZY_ATTRIBUTES = {
    "ConversionError": "common",
    "ConvertArguments": "arguments",
    "convert_checkpoint": "convert",
    "detect_source_format": "sources",
    "write_model_card": "model_card",
}
__all__ = sorted(_LAZY_ATTRIBUTES)
__getattr__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)
