"""What both conversion directions share: the error type, JSON and safetensors I/O, the verification input.

`convert_original_checkpoint.py` (original -> llava_hf) and `convert_transformers_checkpoint.py` (llava_hf <->
transformers' built-in llava) both import from here and not from each other, so both are leaves under the dispatcher
`convert.py` (`llava-hf convert`).
"""

import json
from pathlib import Path

import torch


class ConversionError(ValueError):
    """A source checkpoint that cannot be converted; the message says what is missing or unsupported."""


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def write_safetensors(state: dict[str, torch.Tensor], folder: Path, max_shard_size: str = "5GB"):
    """Contiguous tensors in (sharded) safetensors + index, the layout `from_pretrained` reads."""
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    split = split_torch_state_dict_into_shards(state, max_shard_size=max_shard_size)
    for filename, names in split.filename_to_tensors.items():
        save_file({name: state[name].contiguous() for name in names}, folder / filename, metadata={"format": "pt"})
    if split.is_sharded:
        index = {"metadata": split.metadata, "weight_map": split.tensor_to_filename}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


VERIFY_QUESTION = "What is shown in this image? Describe it."


def verification_image():
    """A deterministic, non-square test image (pad/crop paths both matter)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(30, 44, 3), dtype=np.uint8))
