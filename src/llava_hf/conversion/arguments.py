"""The settings of `llava-hf convert`, `export` and `quantize`, and their shared `SRC DST` command line, apart from the
conversion code so that `--help` and argument errors answer before torch loads (`*_command.py`)."""

from dataclasses import dataclass, field
from typing import Literal

from ..utils.command_line import build_parser, parse_into_dataclasses


@dataclass
class ConvertArguments:
    """Options of `llava-hf convert SRC DST` (SRC and DST are positional)."""

    vision_tower: str | None = field(
        default=None, metadata={"help": "CLIP vision tower folder or repo id; overrides the source's mm_vision_tower."}
    )
    base_model: str | None = field(
        default=None,
        metadata={"help": "Base LLM folder or repo id for stage-1 and LoRA sources (default: the one they name)."},
    )
    use_checkpoint_vision_tower: bool = field(
        default=False,
        metadata={"help": "Use model.vision_tower.* weights saved in the checkpoint (DeepSpeed runs that tuned CLIP)."},
    )
    chat_template: str = field(
        default="vicuna_v1", metadata={"help": "Chat template of the converted processor (LLaVA-1.5: vicuna_v1)."}
    )
    verify: bool = field(
        default=False,
        metadata={"help": "Run the source computation and the result on one image + prompt; fail past --tolerance."},
    )
    tolerance: float = field(default=1e-3, metadata={"help": "Largest accepted max |Δlogit| (float32) for --verify."})


@dataclass
class ExportArguments:
    """Options of `llava-hf export --to transformers SRC DST` (SRC and DST are positional)."""

    to: str = field(default="transformers", metadata={"help": "Target layout; 'transformers' (built-in llava)."})


@dataclass
class QuantizeArguments:
    """Options of `llava-hf quantize SRC DST` (SRC and DST are positional)."""

    bits: Literal[4, 8] = field(
        default=4,
        metadata={"help": "4: NF4 with double quantization (QLoRA's format); 8: LLM.int8. The language model only."},
    )
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = field(
        default="bfloat16",
        metadata={
            "help": "dtype of everything left unquantized (vision tower, projector, embeddings, lm_head) and of the "
            "4-bit blocks' scales; bfloat16 matches the 4-bit compute dtype; auto keeps the source's dtype."
        },
    )


def parse(settings_class: type, argv: list[str] | None, prog: str, description: str, source_help: str):
    """(settings, positional SOURCE and DESTINATION) of a `llava-hf convert|export|quantize ... SRC DST` command line."""
    parser = build_parser(settings_class, prog, description=description)
    parser.add_argument("source", help=source_help)
    parser.add_argument("destination", help="folder to create (must not exist)")
    return parse_into_dataclasses(parser, argv)
