"""How much memory a checkpoint needs and how much there is, without loading it; a dtype cast and a 4-bit CPU
repack that never hold two copies of the weights; handing read pages of memory-mapped files back.

- `read_weights_size`: element counts per dtype from the `.safetensors` headers (8-byte length + JSON), no weight read.
- `available_memory`: MemAvailable of /proc/meminfo or the CUDA device's free memory; LLAVA_HF_AVAILABLE_MEMORY
  (e.g. `20GiB`) replaces it.
- `cast_parameters_releasing_pages`: transformers loads a safetensors checkpoint in its own dtype lazily (the
  parameters are views of the memory-mapped files), but a load with a cast reads every page of the files into the
  process (counted in its RSS until the mapping closes) while it builds the cast copy: two copies at the peak
  (measured: 2.1x the 16-bit weights). Casting after a lazy load, parameter by parameter, and handing each source
  range's file pages back to the page cache (`madvise(MADV_DONTNEED)`) keeps one copy plus one parameter.
- `repack_4bit_releasing_pages`: a checkpoint stored in 4-bit loads lazily too (its 4-bit weights are views of the
  mapped files), but on a CPU with AVX512-BF16 bitsandbytes replaces each 4-bit weight on its layer's first forward
  by a copy in its CPU kernel's layout (and its double-quantized scales by bfloat16 ones). The read pages of the
  files stay counted in the RSS next to that copy: two copies at the peak (a LLaVA-1.5-13B: 16.4 GB for 7.3 GiB of
  weights). Running each layer once at load time, layer by layer, and releasing the file pages of what it replaced
  keeps one copy plus one layer's temporaries.
- `mapped_file_ranges` / `release_mapped_range`: the same release for any read-only file mapping (the data check
  hands back each batch of a memory-mapped Arrow file once it has read it).
"""

import ctypes
import json
import os
import struct
import sys
from dataclasses import dataclass

SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "F8_E4M3": "float8_e4m3fn",
}
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
MADV_DONTNEED = 4


@dataclass
class WeightsSize:
    """The weights of a checkpoint as its safetensors headers describe them, without reading the weights."""

    floating: dict[str, int]  # dtype name -> number of elements
    other_bytes: int  # integer tensors (kept as they are by a dtype cast)

    @property
    def dtype(self) -> str:
        """The checkpoint's dtype: the floating dtype holding the most elements."""
        return max(self.floating, key=self.floating.get)

    def bytes_at(self, dtype: str | None = None) -> int:
        """Bytes in memory with every floating tensor cast to `dtype` (None: as saved)."""
        import torch

        def size(name):
            return torch.finfo(getattr(torch, name)).bits // 8

        if dtype is None:
            return self.other_bytes + sum(count * size(name) for name, count in self.floating.items())
        return self.other_bytes + sum(self.floating.values()) * size(dtype)


def read_weights_size(folder: str) -> WeightsSize | None:
    """Sizes from the `.safetensors` headers of a checkpoint folder (8-byte length + JSON: no weight is read);
    None when the folder holds no safetensors files."""
    names = sorted(name for name in os.listdir(folder) if name.endswith(".safetensors"))
    if not names:
        return None
    floating, other = {}, 0
    for name in names:
        with open(os.path.join(folder, name), "rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dimension in entry["shape"]:
                count *= dimension
            dtype = SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                start, end = entry["data_offsets"]
                other += end - start
            else:
                floating[dtype] = floating.get(dtype, 0) + count
    return WeightsSize(floating, other) if floating else None


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU has bfloat16 matrix instructions (AVX512-BF16 or AMX), from /proc/cpuinfo's flags; without
    them bfloat16 is emulated and no faster than the checkpoint's dtype."""
    try:
        with open(cpuinfo) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in CPU_BF16_FLAGS)
    except OSError:
        pass
    return False


def parse_bytes(text: str) -> int:
    """`20GiB`, `512MiB`, `16GB` or a plain number of bytes."""
    units = {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "kb": 10**3, "mb": 10**6, "gb": 10**9, "b": 1}
    value = text.strip().lower()
    for unit, factor in units.items():
        if value.endswith(unit):
            return int(float(value[: -len(unit)]) * factor)
    return int(float(value))


def available_memory(device: str = "cpu") -> int | None:
    """Bytes that a model can still take: LLAVA_HF_AVAILABLE_MEMORY when set, else the free memory of the CUDA
    device, else MemAvailable of /proc/meminfo (None where neither can be read)."""
    override = os.environ.get("LLAVA_HF_AVAILABLE_MEMORY")
    if override:
        try:
            return parse_bytes(override)
        except ValueError as error:
            raise ValueError(
                f"LLAVA_HF_AVAILABLE_MEMORY={override!r} is not a size; write it like 20GiB or 16000000000."
            ) from error
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return free
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.1f} GiB"


def mapped_file_ranges(suffix: str) -> list[tuple[int, int]]:
    """(start, end) of this process's memory mappings of files whose name ends in `suffix`, from /proc/self/maps
    (empty off Linux)."""
    if not sys.platform.startswith("linux"):
        return []
    ranges = []
    with open("/proc/self/maps") as handle:
        for line in handle:
            fields = line.split(maxsplit=5)
            if len(fields) == 6 and fields[5].strip().endswith(suffix):
                start, end = (int(value, 16) for value in fields[0].split("-"))
                ranges.append((start, end))
    return ranges


def mapped_safetensors_ranges() -> list[tuple[int, int]]:
    """`mapped_file_ranges` of `.safetensors` files."""
    return mapped_file_ranges(".safetensors")


def release_mapped_range(start: int, end: int, mapped: list[tuple[int, int]]) -> bool:
    """Drop the process's resident pages of the bytes [start, end) when they lie in one of the `mapped` read-only
    file mappings (clean, file-backed pages: a later read faults them in again from the page cache or the file, so
    nothing is lost); anything else (anonymous memory, where MADV_DONTNEED would zero data) is left alone. Returns
    whether pages were released."""
    if end <= start or not any(low <= start and end <= high for low, high in mapped):
        return False
    page = os.sysconf("SC_PAGE_SIZE")
    aligned = start - start % page
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.madvise(ctypes.c_void_p(aligned), ctypes.c_size_t(end - aligned), MADV_DONTNEED) == 0


def release_file_pages(tensor, mapped: list[tuple[int, int]]) -> bool:
    """`release_mapped_range` of a tensor's bytes."""
    start = tensor.data_ptr()
    return release_mapped_range(start, start + tensor.numel() * tensor.element_size(), mapped)


def cast_parameters_releasing_pages(model, dtype) -> int:
    """Cast every floating parameter of `model` to `dtype` in place (ties kept: the Parameter objects stay), one at
    a time, releasing the file pages of each source (see the module docstring). Buffers keep their dtype, as they
    do in `from_pretrained(dtype=...)`. Returns how many parameters were cast."""
    mapped = mapped_safetensors_ranges()
    cast = 0
    for parameter in model.parameters():
        if not parameter.is_floating_point() or parameter.dtype == dtype:
            continue
        source = parameter.data
        parameter.data = source.to(dtype)
        if mapped:
            release_file_pages(source, mapped)
        del source
        cast += 1
    return cast


def trim_heap() -> None:
    """Hand the C heap's free pages back to the system (glibc `malloc_trim`; nothing elsewhere)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # another C library (musl)
            pass


def replaced_4bit_tensors(module) -> list:
    """The tensors of a bitsandbytes `Linear4bit` that its CPU repack replaces: the packed weight and the (nested)
    scales of its quant state."""
    state = module.weight.quant_state
    tensors = [module.weight.data, state.absmax]
    if getattr(state, "state2", None) is not None:
        tensors.append(state.state2.absmax)
    return tensors


def repack_4bit_releasing_pages(model) -> int:
    """Let bitsandbytes repack every 4-bit layer of `model` (in eval mode, on CPU) for its CPU kernel now, one layer
    at a time, releasing the file pages of the tensors each repack replaced (see the module docstring). Returns how
    many layers were repacked: 0 where bitsandbytes keeps the stored layout (a CPU without AVX512-BF16).

    The repack happens inside `Linear4bit.forward` (bitsandbytes has no public call for it), so each layer is run on
    one zero row. That first forward also fixes the layer's compute dtype from its input's dtype, so the row has the
    dtype the layer's real inputs will have: the language model's hidden states, in the input embeddings' dtype
    (the decoder casts every layer's output back to it). The outputs are then what they would have been without
    this call, which only moves the repack from the first answer to the load. The repack's temporaries (several
    times the layer's 4-bit size) leave free pages inside the C heap that glibc keeps; trimming it after each layer
    keeps them from adding up (measured: 0.15 GiB less RSS after two blocks of 13B width)."""
    import torch

    layers = [module for module in model.modules() if type(module).__name__ == "Linear4bit" and not module.training]
    if not layers:
        return 0
    mapped = mapped_safetensors_ranges()
    dtype = model.get_input_embeddings().weight.dtype
    repacked = 0
    with torch.no_grad():
        for layer in layers:
            before = replaced_4bit_tensors(layer)
            layer(torch.zeros(1, layer.in_features, dtype=dtype, device=layer.weight.device))
            after = {tensor.data_ptr() for tensor in replaced_4bit_tensors(layer)}
            if layer.weight.data_ptr() != before[0].data_ptr():
                repacked += 1
            for tensor in before:
                if mapped and tensor.data_ptr() not in after:
                    release_file_pages(tensor, mapped)
            del before
            trim_heap()
    return repacked
