# llava-hf quantize SRC DST --bits 4|8
"""`llava-hf quantize` (quantize.py): the arguments are parsed and the source checked before torch loads; a source
that quantize cannot take is bad input (exit 2)."""

import os
import sys

from ..utils.command_line import usage_error
from .arguments import QuantizeArguments, parse

QUANTIZE_DESCRIPTION = (
    "A llava_hf or transformers llava checkpoint -> the same model stored in bitsandbytes 4-bit or 8-bit (language "
    "model only), written one weights file at a time; stock transformers loads it with from_pretrained alone."
)


def main(argv: list[str] | None = None) -> int:
    prog = "llava-hf quantize"
    source_help = "llava_hf or transformers llava checkpoint folder (safetensors)"
    arguments, positional = parse(QuantizeArguments, argv, prog, QUANTIZE_DESCRIPTION, source_help)
    if not os.path.isdir(positional.source):
        return usage_error(prog, f"source {positional.source!r} is not a folder (a llava_hf or llava checkpoint).")
    if os.path.exists(positional.destination):
        return usage_error(prog, f"{positional.destination} already exists; remove it or choose another destination.")
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return usage_error(prog, "quantizing needs bitsandbytes: `pip install bitsandbytes` (CPU or CUDA).")
    from .common import ConversionError
    from .quantize import quantize_checkpoint

    try:
        result = quantize_checkpoint(positional.source, positional.destination, arguments.bits, arguments.dtype)
    except ConversionError as error:
        return usage_error(prog, error)
    loads_with = "stock transformers" if result.model_type == "llava" else "llava_hf installed"
    print(
        f"quantized {result.quantized_layers} language-model layers to {arguments.bits}-bit: {positional.source} "
        f"({result.source_bytes / 2**30:.2f} GiB) -> {result.destination} ({result.destination_bytes / 2**30:.2f} GiB, "
        f"model_type {result.model_type!r}; loads with {loads_with})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
