# llava-hf convert SRC DST [--vision_tower PATH_OR_REPO] [--base_model PATH_OR_REPO] [--verify]
"""Original LLaVA checkpoints (and transformers' built-in llava layout) -> a complete llava_hf checkpoint folder.

Source formats, detected from the files (never from the folder name, the original's most confusing habit):
- `original`: a LlavaLlamaForCausalLM / LlavaMistralForCausalLM checkpoint (the original `llava/model/builder.py` and `llava/train/train.py`): `model.*` Llama keys, `model.mm_projector.*`,
  `.bin` or `.safetensors`, sharded or not. The vision tower comes from `mm_vision_tower` (or `--vision_tower`);
  DeepSpeed-saved `model.vision_tower.vision_tower.*` weights are used when `--use_checkpoint_vision_tower` asks.
  LLaVA-1.6 releases (`image_aspect_ratio: "anyres"`, `mm_patch_merge_type`, `image_grid_pinpoints`,
  `model.image_newline`, the trained tower in the checkpoint) become `LlavaHfNext*` (saved as the built-in llava_next).
- `stage1`: `config.json` + `mm_projector.bin`; the LLM comes from the base model (`_name_or_path` or `--base_model`).
- `lora`: a PEFT adapter + `non_lora_trainables.bin` (the projector); merged into the base model.
- `transformers`: transformers' built-in `llava` layout (llava-hf/* repos), see `convert_transformers_checkpoint.py`.

The destination is written in a temporary sibling folder and renamed into place only after everything (and, with
`--verify`, the numerical check) succeeded: a failure never leaves a half-written DST.

This file is the dispatcher and the CLI. The directions are leaves that import only `common.py` and `sources.py`:
`convert_original_checkpoint.py` (original / stage-1 / LoRA -> llava_hf, checked by `verification.py`) and
`convert_transformers_checkpoint.py` (transformers' built-in llava <-> llava_hf).
"""

from dataclasses import dataclass
from pathlib import Path

from ..utils.io import staged_directory
from .arguments import ConvertArguments
from .common import ConversionError
from .convert_original_checkpoint import convert_original
from .convert_transformers_checkpoint import import_transformers_checkpoint, verify_against_transformers
from .model_card import write_model_card
from .sources import detect_source_format, resolve_folder
from .verification import verify_conversion


@dataclass
class ConversionResult:
    """What `convert_checkpoint` wrote and checked; `verification` is None without `verify=True`."""

    destination: Path
    source_format: str
    provenance: dict
    verification: dict | None = None


def convert_checkpoint(source: str | Path, destination: str | Path, arguments: ConvertArguments | None = None):
    """Convert `source` (any supported format, folder or repo id) into a llava_hf checkpoint at `destination`.

    Raises `ConversionError` (nothing written) when the source is incomplete, inconsistent or unsupported, or when
    `verify` finds a max |Δlogit| above `tolerance`.
    """
    arguments = arguments or ConvertArguments()
    destination = Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; remove it or choose another destination.")
    source_folder = resolve_folder(source, "source checkpoint")
    source_format = detect_source_format(source_folder)
    if source_format == "llava_hf":
        raise ConversionError(f"{source_folder} is already a llava_hf checkpoint; nothing to convert.")

    with staged_directory(destination) as staging:  # nothing at `destination` unless everything succeeds
        if source_format == "transformers":
            provenance = import_transformers_checkpoint(source_folder, staging, arguments.chat_template)
            verification = None
            if arguments.verify:
                verification = verify_against_transformers(source_folder, staging, arguments.tolerance)
        else:
            provenance, reference_inputs = convert_original(
                source_folder,
                source_format,
                staging,
                vision_tower=arguments.vision_tower,
                base_model=arguments.base_model,
                use_checkpoint_vision_tower=arguments.use_checkpoint_vision_tower,
                chat_template=arguments.chat_template,
            )
            verification = (
                verify_conversion(staging, reference_inputs, arguments.tolerance) if arguments.verify else None
            )
        provenance["source"] = str(source)
        if source_folder.parent.name == "snapshots":  # a Hub download: record which commit was converted
            provenance["source_revision"] = source_folder.name
        write_model_card(staging, provenance=provenance, verification=verification)
    return ConversionResult(destination, source_format, provenance, verification)
