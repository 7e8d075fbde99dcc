"""Plain transformers (no llava_hf) loads what llava_hf writes — the folder `push_to_hub` uploads with default
arguments and the `llava-hf export --to transformers` folder — through its Auto classes and
`pipeline("image-text-to-text")`, and sees exactly what llava_hf sees: the same prompt ids, pixel values and greedy
tokens on wide, tall and greyscale images. A 16-bit image is the case stock preprocessing reads differently: it
converts with PIL's `convert("RGB")`, which clips every value above 255 to white (as the original LLaVA code does),
where llava_hf scales 16-bit values to 8 bits; stock transformers sees exactly what llava_hf sees on that clipped
image."""

import json

import pytest
import torch

from helpers.consumers import QUESTION, run_client, written_folders  # noqa: F401  (the `written` fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("layout", ["pushed", "exported"])
def test_auto_classes_and_pipeline_match_llava_hf(written, layout):
    root, folders, images, reference = written
    output = root / f"{layout}.pt"
    images_json = json.dumps({name: str(path) for name, path in images.items()})
    loaded = run_client("transformers_client", folders[layout], images_json, QUESTION, output, cwd=root)
    assert not loaded["llava_hf_imported"]
    assert loaded["model_type"] == "llava"
    assert (loaded["model"], loaded["pipeline_model"]) == ("LlavaForConditionalGeneration",) * 2
    assert loaded["processor"] == "LlavaProcessor"
    # transformers picks its PIL or torchvision backend: LlavaImageProcessor or LlavaImageProcessorPil
    assert loaded["image_processor"].startswith("LlavaImageProcessor")
    results = torch.load(output)
    for name, expected in reference.items():
        result = results[name]
        assert result["input_ids"] == expected["input_ids"], name
        torch.testing.assert_close(result["pixel_values"], expected["pixel_values"], rtol=0, atol=1e-6, msg=name)
        assert result["new_tokens"] == expected["new_tokens"], name
        assert result["pipeline_text"] == expected["text"], name
    assert not torch.equal(results["16-bit"]["pixel_values"], reference["16-bit"]["scaled_pixel_values"])
