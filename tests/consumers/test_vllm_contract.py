"""vLLM needs a GPU build, so it does not run here; what it reads from a checkpoint before running one is checked
with plain transformers (no llava_hf) on the pushed and exported folders: the stock architecture and image token in
config.json, a stock processor from AutoProcessor, and one placeholder count everywhere — config.json's
`image_seq_length`, the CLIP tower's (image_size / patch_size)^2 with CLS dropped (vLLM's `llava`), the processor's
`_get_num_multimodal_tokens` (vLLM's Transformers backend), and the image tokens the processor actually writes, for
wide, tall, greyscale and 16-bit images."""

import json

import pytest

from helpers.consumers import run_client, written_folders  # noqa: F401  (the `written` fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layout", ["pushed", "exported"])
def test_what_vllm_reads_is_stock_and_counts_agree(written, layout):
    root, folders, images, _ = written
    images_json = json.dumps({name: str(path) for name, path in images.items()})
    contract = run_client("vllm_contract", folders[layout], images_json, cwd=root)
    assert not contract["llava_hf_imported"]
    assert contract["architectures"] == ["LlavaForConditionalGeneration"] and contract["model_type"] == "llava"
    assert contract["processor"] == "LlavaProcessor"
    assert contract["image_token_id"] == contract["processor_image_token_id"]
    assert contract["vision_feature_select_strategy"] == "default"
    tokens = contract["image_seq_length"]
    assert tokens == contract["tower_tokens"] == 16  # the tiny tower: 32 px, patch 8
    assert contract["num_image_tokens"] == [tokens] * len(images)
    assert contract["counted"] == {name: tokens for name in images}
