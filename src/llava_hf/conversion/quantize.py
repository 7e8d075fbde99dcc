# llava-hf quantize SRC DST --bits 4|8
"""A LLaVA checkpoint -> the same checkpoint stored in bitsandbytes 4-bit NF4 or 8-bit LLM.int8, one weights file at
a time, that stock transformers loads with `from_pretrained(DST)` (no quantization arguments, no llava_hf).

Why not `from_pretrained(SRC, quantization_config=...)` then `save_pretrained`: transformers quantizes while loading,
with every 16-bit shard passing through memory (17 GB peak RSS for a 7B on CPU), so a 13B does not fit 24 GB. Here
each source file is opened alone, each tensor read from it is either copied or quantized, and the results of that
file are written before the next one is opened: the peak is about one source file plus its quantized result.

The tensors written are those bitsandbytes' own modules serialize (`Linear4bit`: the packed `weight` plus its
`weight.absmax`, `weight.quant_map`, `weight.nested_*` and `weight.quant_state.bitsandbytes__nf4`; `Linear8bitLt`:
the int8 `weight`, `SCB` and `weight_format`), computed by the same bitsandbytes functions transformers calls, so
the file is what transformers itself would save. Only the language model's Linear layers are quantized: the vision
tower, the projector and `lm_head` keep their dtype (`QUANTIZATION_SKIP_MODULES`), as when quantizing at load time.

A llava_hf checkpoint that transformers' built-in Llava can express (a CLIP tower and the 2-layer projector, i.e.
LLaVA-1.5) is written as the built-in `llava` model with the stock LlavaProcessor; other llava_hf checkpoints keep
their llava_hf config (loading them needs llava_hf); a built-in `llava` checkpoint stays one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from ..utils.io import staged_directory
from ..utils.loading import QUANTIZATION_SKIP_MODULES, bitsandbytes_config
from .common import ConversionError, read_json
from .convert_transformers_checkpoint import write_builtin_files

INDEX_FILE = "model.safetensors.index.json"
# On-disk prefix -> in-memory module prefix. transformers' llava (and llava_hf, which registers the same mapping)
# saves the legacy layout on the left and renames it on load; names already in the in-memory layout are kept.
DISK_TO_MODULE_PREFIXES = {
    "language_model.model.": "model.language_model.",
    "language_model.lm_head.": "lm_head.",
    "vision_tower.": "model.vision_tower.",
    "multi_modal_projector.": "model.multi_modal_projector.",
}


@dataclass
class QuantizeResult:
    destination: Path
    model_type: str  # "llava" (stock transformers loads it) or "llava_hf"
    quantized_layers: int
    source_bytes: int
    destination_bytes: int


def module_name(disk_key: str) -> str:
    """The in-memory module path of the tensor stored under `disk_key`, without the parameter name."""
    for disk, memory in DISK_TO_MODULE_PREFIXES.items():
        if disk_key.startswith(disk):
            disk_key = memory + disk_key[len(disk) :]
            break
    return disk_key.rsplit(".", 1)[0]


def quantized_linear_names(config) -> set[str]:
    """In-memory names of the Linear layers to quantize: every `nn.Linear` of the model built from `config` on the
    meta device (no memory), minus those under `QUANTIZATION_SKIP_MODULES`."""
    from transformers import AutoModelForImageTextToText

    import llava_hf  # noqa: F401  (registers the llava_hf model type with the Auto classes)

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    return {
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and not any(name == skip or name.startswith(skip + ".") for skip in QUANTIZATION_SKIP_MODULES)
    }


def quantize_weight(weight: torch.Tensor, bits: int, quantization) -> dict[str, torch.Tensor]:
    """The tensors bitsandbytes' `Linear4bit` / `Linear8bitLt` save for `weight`, keyed by their suffix after the
    module name (`weight`, `weight.absmax`, ... / `weight`, `SCB`, `weight_format`)."""
    import bitsandbytes.functional as bnb_functional

    if bits == 8:
        # Int8Params quantizes the float16 copy row-wise (bitsandbytes.nn.Int8Params._quantize); format 0 = "row".
        int8_weight, row_scales, _ = bnb_functional.int8_vectorwise_quant(weight.to(torch.float16).contiguous())
        return {"weight": int8_weight, "SCB": row_scales, "weight_format": torch.tensor(0, dtype=torch.uint8)}
    packed, quant_state = bnb_functional.quantize_4bit(
        weight.contiguous(),
        blocksize=64,  # Params4bit's default, what transformers quantizes with
        compress_statistics=quantization.bnb_4bit_use_double_quant,
        quant_type=quantization.bnb_4bit_quant_type,
        quant_storage=torch.uint8,
    )
    return {"weight": packed, **{f"weight.{key}": value for key, value in quant_state.as_dict(packed=True).items()}}


def weight_files(source: Path) -> list[str]:
    """The safetensors files of `source`, in the order of its index (or the single `model.safetensors`)."""
    if (source / INDEX_FILE).is_file():
        return sorted(set(read_json(source / INDEX_FILE)["weight_map"].values()))
    if (source / "model.safetensors").is_file():
        return ["model.safetensors"]
    raise ConversionError(f"{source} has no safetensors weights (model.safetensors or {INDEX_FILE}); re-save it first.")


def check_source(source: Path) -> dict:
    """The source's config.json, after checking that `source` is an unquantized LLaVA checkpoint with safetensors."""
    if not (source / "config.json").is_file():
        raise ConversionError(f"{source} has no config.json; give a llava_hf or transformers llava checkpoint folder.")
    config = read_json(source / "config.json")
    if config.get("model_type") not in ("llava_hf", "llava"):
        raise ConversionError(
            f"{source} is a {config.get('model_type')!r} checkpoint; quantize takes llava_hf or transformers llava "
            "checkpoints (convert an original LLaVA checkpoint first with `llava-hf convert`)."
        )
    if config.get("quantization_config"):
        raise ConversionError(f"{source} is already quantized ({config['quantization_config'].get('quant_method')}).")
    weight_files(source)
    return config


def quantize_checkpoint(
    source: str | Path, destination: str | Path, bits: int, dtype: str = "bfloat16"
) -> QuantizeResult:
    """Write `source` with its language model's Linear weights quantized to `bits` (4: NF4 + double quantization,
    8: LLM.int8) at `destination`, reading and writing one weights file at a time.

    `dtype` ("bfloat16", "float16", "float32", or "auto" for the source's): what every other floating tensor is
    stored in, and what weights are cast to before quantizing, as transformers does when it quantizes a model loaded
    in that dtype. A stored-quantized model loads its unquantized tensors as saved, so this is the dtype users get.
    Raises ConversionError (nothing written) for a source it cannot quantize.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    from llava_hf.modeling import LlavaHfConfig

    source, destination = Path(source), Path(destination)
    if destination.exists():
        raise ConversionError(f"{destination} already exists; remove it or choose another destination.")
    source_config = check_source(source)
    config = LlavaHfConfig.from_pretrained(source)  # either format
    quantization = bitsandbytes_config(bits)  # 4-bit: computes in bfloat16
    cast_to = None if dtype == "auto" else getattr(torch, dtype)
    to_quantize = quantized_linear_names(config)
    if not to_quantize:
        raise ConversionError(f"{source} has no language-model Linear layers to quantize.")
    as_builtin = source_config["model_type"] == "llava_hf" and config.builtin_expressible

    weight_map, quantized_layers = {}, 0
    with staged_directory(destination) as staging:
        for filename in weight_files(source):
            written = {}
            with safe_open(source / filename, framework="pt") as weights:
                for key in weights.keys():
                    tensor = weights.get_tensor(key)
                    if cast_to is not None and tensor.is_floating_point():
                        tensor = tensor.to(cast_to)
                    if key.endswith(".weight") and module_name(key) in to_quantize:
                        prefix = key[: -len("weight")]
                        parts = quantize_weight(tensor, bits, quantization)
                        written.update({prefix + suffix: part for suffix, part in parts.items()})
                        quantized_layers += 1
                    else:
                        written[key] = tensor
            save_file(written, staging / filename, metadata={"format": "pt"})
            weight_map.update(dict.fromkeys(written, filename))
            del written  # the next file's tensors replace these, never join them
        if (source / INDEX_FILE).is_file():
            total = sum((staging / name).stat().st_size for name in set(weight_map.values()))
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (staging / INDEX_FILE).write_text(json.dumps(index, indent=2))
        if as_builtin:
            write_builtin_files(source, staging)
            if (source / "README.md").is_file():
                shutil.copyfile(source / "README.md", staging / "README.md")
        else:
            copy_metadata_files(source, staging)
        config_path = staging / "config.json"
        quantized_config = {**read_json(config_path), "quantization_config": quantization.to_dict()}
        if cast_to is not None:
            quantized_config["dtype"] = dtype
        config_path.write_text(json.dumps(quantized_config, indent=2))
    return QuantizeResult(
        destination=destination,
        model_type="llava" if as_builtin or source_config["model_type"] == "llava" else "llava_hf",
        quantized_layers=quantized_layers,
        source_bytes=sum((source / name).stat().st_size for name in weight_files(source)),
        destination_bytes=sum((destination / name).stat().st_size for name in set(weight_map.values())),
    )


def copy_metadata_files(source: Path, destination: Path) -> None:
    """Everything in `source` but its weights (config, processor, tokenizer, templates, model card)."""
    for path in sorted(source.iterdir()):
        if path.is_file() and path.suffix != ".safetensors" and path.name != INDEX_FILE:
            shutil.copyfile(path, destination / path.name)
