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


CARRY_BYTES = 256 * 2**20


class StreamingSafetensorsWriter:
    """Sharded safetensors written while a conversion streams: tensors are added one by one and leave memory when
    their file is written, so a conversion holds only what it has not written yet.

    A file is written when the pending tensors reach `max_shard_bytes` or when `flush()` is called; the converter
    calls `flush(min_bytes=CARRY_BYTES)` after each source shard, so what it carries into the next shard stays below
    CARRY_BYTES (and a small checkpoint still becomes one file). `close()` names the files
    `model-0000k-of-0000n.safetensors` (or `model.safetensors` when there is one) and writes the index
    `from_pretrained` reads.
    """

    def __init__(self, folder: Path, max_shard_bytes: int = 5 * 10**9):
        self.folder = Path(folder)
        self.max_shard_bytes = max_shard_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.pending_bytes = 0
        self.files: list[list[str]] = []  # tensor names per written file, in order
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor):
        if name in self.pending or any(name in names for names in self.files):
            raise ConversionError(f"weight {name} was produced twice; the source holds it in two shards.")
        nbytes = tensor.numel() * tensor.element_size()
        if self.pending and self.pending_bytes + nbytes > self.max_shard_bytes:
            self.flush()
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += nbytes

    def flush(self, min_bytes: int = 0):
        """Write the pending tensors as one file, unless they are fewer than `min_bytes`."""
        if not self.pending or self.pending_bytes < min_bytes:
            return
        from safetensors.torch import save_file

        # safetensors >= 0.6 writes from the tensors' memory, without a serialized copy
        save_file(self.pending, self._part_path(len(self.files)), metadata={"format": "pt"})
        self.files.append(list(self.pending))
        self.total_bytes += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> list[str]:
        """Write what is pending, give the files their final names, write the index; returns the file names."""
        self.flush()
        count = len(self.files)
        names = (
            ["model.safetensors"]
            if count == 1
            else [f"model-{number:05d}-of-{count:05d}.safetensors" for number in range(1, count + 1)]
        )
        for part, name in enumerate(names):
            self._part_path(part).rename(self.folder / name)
        if count > 1:
            weight_map = {tensor: name for name, tensors in zip(names, self.files) for tensor in tensors}
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        return names

    def _part_path(self, part: int) -> Path:
        return self.folder / f"model-part-{part:05d}.safetensors.tmp"


VERIFY_QUESTION = "What is shown in this image? Describe it."


def verification_image():
    """A deterministic, non-square test image (pad/crop paths both matter)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, size=(30, 44, 3), dtype=np.uint8))
