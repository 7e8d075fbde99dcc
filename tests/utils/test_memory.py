"""Casting a lazily loaded checkpoint in place: the same weights as `from_pretrained(dtype=...)`, file pages handed
back, anonymous memory never touched. The real-size peak RSS is in benchmarks/RESULTS_real_size.md."""

import sys

import pytest
import torch

import llava_hf  # noqa: F401  (registers the model type)
from llava_hf.testing import make_tiny_model, make_tiny_processor
from llava_hf.utils import memory
from llava_hf.utils.loading import load_checkpoint

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


@pytest.fixture(scope="module")
def fp16_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("memory") / "tiny-fp16"
    make_tiny_model().to(torch.float16).save_pretrained(folder)
    make_tiny_processor().save_pretrained(folder)
    return folder


def test_cast_load_equals_from_pretrained_with_the_dtype(fp16_checkpoint, monkeypatch):
    from transformers import AutoModelForImageTextToText

    cast = []
    real = memory.cast_parameters_releasing_pages
    monkeypatch.setattr(
        "llava_hf.utils.loading.cast_parameters_releasing_pages", lambda m, d: cast.append(real(m, d)) or cast[-1]
    )
    ours, _ = load_checkpoint(str(fp16_checkpoint), dtype="bfloat16", device="cpu")
    assert cast and cast[0] > 0  # the lazy load + in-place cast path ran
    reference = AutoModelForImageTextToText.from_pretrained(fp16_checkpoint, dtype=torch.bfloat16)
    ours_state, reference_state = ours.state_dict(), reference.state_dict()
    assert ours_state.keys() == reference_state.keys()
    for name, tensor in reference_state.items():
        assert ours_state[name].dtype == tensor.dtype and torch.equal(ours_state[name], tensor), name
    assert ours.config.dtype == torch.bfloat16
    assert not ours.model.vision_tower.embeddings.patch_embedding.weight.requires_grad  # frozen tower stays frozen


@linux_only
def test_file_pages_are_released_and_anonymous_memory_is_left_alone(fp16_checkpoint):
    from transformers import AutoModelForImageTextToText

    anonymous = torch.arange(3 * 4096, dtype=torch.float32)
    assert memory.release_file_pages(anonymous, memory.mapped_safetensors_ranges()) is False
    assert torch.equal(anonymous, torch.arange(3 * 4096, dtype=torch.float32))
    # a lazy load as saved: the parameters are views of the memory-mapped file
    lazy = AutoModelForImageTextToText.from_pretrained(fp16_checkpoint, dtype="auto")
    mapped = memory.mapped_safetensors_ranges()
    weight = lazy.lm_head.weight.data
    copy = weight.clone()
    assert memory.release_file_pages(weight, mapped) is True
    assert torch.equal(weight, copy)  # read back from the file, unchanged
