# llava-hf convert SRC DST [--vision_tower PATH_OR_REPO] [--base_model PATH_OR_REPO] [--verify]
# llava-hf export --to transformers SRC DST
# llava-hf quantize SRC DST --bits 4|8
"""`llava-hf convert` (convert.py), `llava-hf export` (convert_transformers_checkpoint.py) and `llava-hf quantize`
(quantize.py): the arguments are parsed and the source checked before torch loads. A source that is neither a folder
nor a Hub repo id is bad input (exit 2); a conversion that fails (unknown layout, failed --verify) exits 1; a source
that quantize cannot take is bad input (exit 2)."""

import json
import os
import re
import sys

from ..utils.cli import build_parser, parse_into_dataclasses, usage_error
from .arguments import ConvertArguments, ExportArguments, QuantizeArguments

CONVERT_DESCRIPTION = (
    "Original LLaVA checkpoints (and transformers' built-in llava layout) -> a complete llava_hf checkpoint folder."
)
EXPORT_DESCRIPTION = (
    "llava_hf <-> transformers' built-in `llava` layout (what llava-hf/* repos, vLLM, SGLang and TGI load)."
)
QUANTIZE_DESCRIPTION = (
    "A llava_hf or transformers llava checkpoint -> the same model stored in bitsandbytes 4-bit or 8-bit (language "
    "model only), written one weights file at a time; stock transformers loads it with from_pretrained alone."
)
REPO_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # `name` or `org/name` (huggingface_hub's rule, without its length limits)


def parse(settings_class: type, argv: list[str] | None, prog: str, description: str, source_help: str):
    """(settings, positional SOURCE and DESTINATION) of a `llava-hf convert|export ... SRC DST` command line."""
    parser = build_parser(settings_class, prog, description=description)
    parser.add_argument("source", help=source_help)
    parser.add_argument("destination", help="folder to create (must not exist)")
    return parse_into_dataclasses(parser, argv)


def convert(argv: list[str] | None = None) -> int:
    prog = "llava-hf convert"
    source_help = "original LLaVA / stage-1 / LoRA / llava-hf checkpoint folder or repo id"
    arguments, positional = parse(ConvertArguments, argv, prog, CONVERT_DESCRIPTION, source_help)
    if not os.path.exists(positional.source) and not REPO_ID.fullmatch(positional.source):
        return usage_error(prog, f"source {positional.source!r} is neither a folder nor a Hub repo id (org/name).")
    from .common import ConversionError
    from .convert import convert_checkpoint

    try:
        result = convert_checkpoint(positional.source, positional.destination, arguments)
    except ConversionError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    print(f"converted {result.source_format} checkpoint {positional.source} -> {result.destination}")
    if result.verification is not None:
        check = result.verification
        print(
            f"verified: max |Δlogit| = {check['max_abs_logit_diff']:.3g} over {check['positions']} positions, "
            f"greedy tokens agree: {check['greedy_agree']}, token ids identical: {check['token_ids_identical']}"
        )
    return 0


def export(argv: list[str] | None = None) -> int:
    prog = "llava-hf export"
    arguments, positional = parse(ExportArguments, argv, prog, EXPORT_DESCRIPTION, "llava_hf checkpoint folder")
    if arguments.to != "transformers":
        return usage_error(prog, f"unknown target {arguments.to!r}; supported: transformers.")
    if not os.path.isdir(positional.source):
        return usage_error(prog, f"source {positional.source!r} is not a folder (a llava_hf checkpoint).")
    from .common import ConversionError
    from .convert_transformers_checkpoint import export_to_transformers

    try:
        exported = export_to_transformers(positional.source, positional.destination)
    except ConversionError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    architecture = json.loads((exported / "config.json").read_text())["architectures"][0]
    print(f"exported {positional.source} -> {positional.destination} (transformers {architecture})")
    return 0


def quantize(argv: list[str] | None = None) -> int:
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
