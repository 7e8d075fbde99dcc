"""Checkpoint conversion: original LLaVA / stage-1 / LoRA / transformers' llava -> llava_hf, llava_hf -> transformers,
bitsandbytes 4-bit / 8-bit copies that stock transformers loads (`quantize`), and the model card written next to
every converted checkpoint.

- `convert_command.py`                  `llava-hf convert`: arguments and source checked before torch loads
- `export_command.py`                   `llava-hf export`
- `quantize_command.py`                 `llava-hf quantize`
- `arguments.py`                        ConvertArguments, ExportArguments, QuantizeArguments and their SRC DST command line
- `convert.py`                          convert_checkpoint(): detect the source, pick the direction, stage atomically, verify, card
- `sources.py`                          reading original sources: folder or Hub, format detection, mm_* checks, weights
- `convert_original_checkpoint.py`      original / stage-1 / LoRA -> llava_hf checkpoint (weights, token rows, tokenizer, processor)
- `convert_transformers_checkpoint.py`  export to transformers' built-in layout, and import of it
- `verification.py`                     `--verify` for original sources: `reference.py`'s computation vs the converted checkpoint
- `reference.py`                        the original computation (tokenizer_image_token, pad + CLIP, projector, splice, Llama)
- `common.py`                           what both directions share: ConversionError, JSON/safetensors writing, the verification input
- `model_card.py`                       README.md of a checkpoint rendered through `model_card_template.md`
- `quantize.py`                         a bitsandbytes 4/8-bit checkpoint written one weights file at a time
- `hub.py`                              prepare_for_hub / push_to_hub (filled card, trust_remote_code files when needed)
"""

from ..utils.lazy import lazy_attributes

# public name -> submodule, loaded on first use: `llava-hf convert --help` (convert_command.py) needs no torch.
_LAZY_ATTRIBUTES = {
    "ConversionError": "common",
    "ConvertArguments": "arguments",
    "convert_checkpoint": "convert",
    "detect_source_format": "sources",
    "write_model_card": "model_card",
}
__all__ = sorted(_LAZY_ATTRIBUTES)
__getattr__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES)
