"""`llava-hf convert` of the LLaVA-1.6 release layouts (vicuna, mistral, 34b; tests/assets/make_original_checkpoints.py)
with `--verify` against the original computation, and the converted folder in stock transformers' LlavaNext, run in a
process where llava_hf cannot be imported."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llava_hf.conversion.arguments import ConvertArguments
from llava_hf.conversion.convert import convert_checkpoint
from llava_hf.modeling import LlavaHfNextForConditionalGeneration
from llava_hf.processing import LlavaHfNextProcessor
from llava_hf.testing import make_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "assets"))
import make_original_checkpoints  # noqa: E402

LAYOUTS = {  # layout -> the template its release uses
    "llava-v1.6-vicuna-tiny": "vicuna_v1",
    "llava-v1.6-mistral-tiny": "mistral_instruct",
    "llava-v1.6-34b-tiny": "chatml_direct",
}
SIZES = [(44, 30), (30, 44), (64, 64), (1, 90), (90, 2)]  # (width, height), none where the built-in's rounding differs
BUILTIN_ROUNDING_SIZE = (47, 188)  # the built-in keeps two more rows than the original here (docs/llava_next.md)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("next")
    tower = make_original_checkpoints.make_vision_tower(root / "clip-tiny")
    base = make_original_checkpoints.make_base_llm(root / "vicuna-tiny")
    sources = make_original_checkpoints.build_next(root, tower, base)
    results = {}
    for name, template in LAYOUTS.items():
        arguments = ConvertArguments(verify=True, chat_template=template)
        results[name] = convert_checkpoint(sources[name], root / f"{name}-converted", arguments)
    return sources, results


@pytest.mark.parametrize("name", LAYOUTS)
def test_release_layout_converts_and_verifies_against_the_original(converted, name):
    sources, results = converted
    result = results[name]
    assert result.source_format == "original"
    assert result.verification["token_ids_identical"] and result.verification["greedy_agree"]
    assert result.verification["max_abs_logit_diff"] <= 1e-5
    config = json.loads((result.destination / "config.json").read_text())
    assert config["model_type"] == "llava_next" and config["architectures"] == ["LlavaNextForConditionalGeneration"]
    assert config["text_config"]["model_type"] == ("mistral" if "mistral" in name else "llama")
    source_config = json.loads((sources[name] / "config.json").read_text())
    assert config["image_grid_pinpoints"] == [[h, w] for w, h in source_config["image_grid_pinpoints"]]
    processor_config = json.loads((result.destination / "processor_config.json").read_text())
    assert processor_config["processor_class"] == "LlavaNextProcessor"
    # the release trained its tower: the checkpoint's tower weights are used, not the named CLIP's
    source = load_file(sources[name] / "model.safetensors")
    weights = load_file(result.destination / "model.safetensors")
    key = "vision_model.embeddings.patch_embedding.weight"
    assert torch.equal(
        weights["vision_tower." + key.removeprefix("vision_model.")], source[f"model.vision_tower.vision_tower.{key}"]
    )
    assert torch.equal(weights["image_newline"], source["model.image_newline"])


STOCK_SCRIPT = """
import json, sys
sys.modules["llava_hf"] = None  # any import of llava_hf fails here
import torch
from PIL import Image
import numpy as np
from transformers import AutoModelForImageTextToText, AutoProcessor

folder, sizes = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForImageTextToText.from_pretrained(folder, dtype=torch.float32).eval()
processor = AutoProcessor.from_pretrained(folder)
out = {"classes": [type(model).__name__, type(processor).__name__, type(processor.image_processor).__name__]}
for seed, (width, height) in enumerate(sizes):
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits[0]
        tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1]:]
    out[f"{width}x{height}"] = {"ids": inputs["input_ids"][0].tolist(), "logits": logits.tolist(), "tokens": tokens.tolist()}
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", LAYOUTS)
def test_converted_folder_answers_identically_in_stock_transformers(converted, name):
    folder = converted[1][name].destination
    sizes = SIZES + [BUILTIN_ROUNDING_SIZE]
    result = subprocess.run(
        [sys.executable, "-c", STOCK_SCRIPT, str(folder), json.dumps(sizes)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    stock = json.loads(result.stdout.strip().splitlines()[-1])
    assert stock["classes"] == ["LlavaNextForConditionalGeneration", "LlavaNextProcessor", "LlavaNextImageProcessorPil"]

    model = LlavaHfNextForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
    processor = LlavaHfNextProcessor.from_pretrained(folder)
    for seed, (width, height) in enumerate(sizes):
        image = make_image(seed, (width, height))
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        theirs = stock[f"{width}x{height}"]
        if (width, height) == BUILTIN_ROUNDING_SIZE:  # the documented difference: two more feature columns
            map_rows = 3 * 4  # a 47x188 image tiles as 3 rows x 1 column of 32 px tiles, 4 patches each way
            assert len(theirs["ids"]) == inputs["input_ids"].shape[1] + 2 * map_rows
            continue
        assert theirs["ids"] == inputs["input_ids"][0].tolist()
        with torch.no_grad():
            logits = model(**inputs).logits[0]
            tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, inputs["input_ids"].shape[1] :]
        assert (logits - torch.tensor(theirs["logits"])).abs().max().item() <= 1e-5
        assert tokens.tolist() == theirs["tokens"]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("mm_patch_merge_type", "spatial", "'spatial_unpad' and 'flat' convert with 'anyres'"),
        ("image_aspect_ratio", "anyres_max_9", "image_aspect_ratio='anyres_max_9' is not supported"),
        ("image_grid_pinpoints", None, "needs image_grid_pinpoints"),
    ],
)
def test_unsupported_anyres_variants_are_refused_by_name(converted, tmp_path, field, value, message):
    import shutil

    from llava_hf.conversion.common import ConversionError

    source = tmp_path / "source"
    shutil.copytree(converted[0]["llava-v1.6-vicuna-tiny"], source)
    config = json.loads((source / "config.json").read_text())
    config[field] = value
    (source / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConversionError, match=message):
        convert_checkpoint(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_for_hub_keeps_a_converted_llava_next_in_the_builtin_format(converted, tmp_path):
    import shutil

    from llava_hf.conversion.hub import prepare_for_hub

    folder = tmp_path / "hub"
    shutil.copytree(converted[1]["llava-v1.6-mistral-tiny"].destination, folder)
    prepare_for_hub(folder, "tiny-org/llava-v1.6-mistral-tiny")
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_next" and "auto_map" not in config
    assert "tiny-org/llava-v1.6-mistral-tiny" in (folder / "README.md").read_text()
    assert not list(folder.glob("*.py"))  # no code shipped: stock transformers loads it
