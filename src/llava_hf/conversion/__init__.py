"""Checkpoint conversion: original LLaVA / stage-1 / LoRA / transformers' llava -> llava_hf, llava_hf -> transformers,
and the model card written next to every converted checkpoint."""

from .common import ConversionError
from .convert import ConvertArguments, convert_checkpoint
from .model_card import write_model_card
from .sources import detect_source_format

__all__ = ["ConversionError", "ConvertArguments", "convert_checkpoint", "detect_source_format", "write_model_card"]
