"""What llava_hf saves, read where llava_hf is not importable: stock `AutoConfig`, `AutoModelForImageTextToText`,
`AutoProcessor` and `pipeline("image-text-to-text")` on a default-saved folder give the prompt ids, pixel values and
greedy tokens llava_hf gives; the README Quickstart and the model card's "How to use" run as written there.

How llava_hf is made unimportable in the child: see `helpers/without_llava_hf.py`. The model is tiny but built as a user would from real-shaped parts
(a full CLIPModel folder, a SentencePiece tokenizer without `<image>` or pad: tests/assets/real_shaped).
"""

import json
import re
import struct
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.paths import REAL_SHAPED
from helpers.without_llava_hf import run_without_llava_hf
from llava_hf import LlavaHfForConditionalGeneration, LlavaHfProcessor
from llava_hf.conversion.model_card import write_model_card
from llava_hf.testing import make_tiny_parts

README = Path(__file__).parents[1] / "README.md"


def write_16bit_rgb_png(path: Path, pixels: np.ndarray):
    """A 48-bit RGB PNG (8 bytes per pixel pair of channels), written by hand: PIL cannot write one, cameras and
    scanners do; PIL opens it as 8-bit RGB."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")
    )


def real_shaped_images(folder: Path) -> dict[str, Path]:
    """Wide, tall, greyscale and 16-bit files, as users' photos and scans come."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    paths = {name: folder / f"{name}.png" for name in ("wide", "tall", "greyscale", "16bit")}
    Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)).save(paths["wide"])
    Image.fromarray(rng.integers(0, 256, (90, 36, 3), dtype=np.uint8)).save(paths["tall"])
    Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8), mode="L").save(paths["greyscale"])
    write_16bit_rgb_png(paths["16bit"], rng.integers(0, 65536, (44, 60, 3), dtype=np.uint16))
    return paths


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A default-saved checkpoint built from real-shaped parts, in the demo's folder layout (`llava_demo/model`, with
    the model card the demo writes)."""
    from llava_hf.training import build_from_parts

    root = tmp_path_factory.mktemp("consumer")
    vision, language = make_tiny_parts(root / "parts", REAL_SHAPED)
    model, processor = build_from_parts(str(vision), str(language), chat_template="vicuna_v1")
    torch.manual_seed(0)
    for parameter in model.model.multi_modal_projector.parameters():  # a projector that is not near zero
        parameter.data.normal_(0, 0.5)
    model.generation_config.max_new_tokens = 6
    folder = root / "llava_demo" / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_model_card(folder, repo_id=str(folder))
    return root, folder


EQUALITY_SCRIPT = textwrap.dedent(
    """
    import json, sys, torch
    from PIL import Image
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor, pipeline
    folder, images, output = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder, backend="pil")
    pipe = pipeline("image-text-to-text", model=folder)
    print("classes:", type(config).__name__, type(model).__name__, type(processor).__name__, type(pipe.model).__name__)
    results = {}
    for name, path in images.items():
        image = Image.open(path)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        tokens = model.generate(**inputs, do_sample=False)[0, inputs.input_ids.shape[1]:]
        chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": "What is in the image?"}]}]
        text = pipe(text=chat, return_full_text=False, generate_kwargs={"do_sample": False})[0]["generated_text"]
        results[name] = {"input_ids": inputs.input_ids, "pixel_values": inputs.pixel_values, "tokens": tokens, "pipeline": text}
    torch.save(results, output)
    """
)


@pytest.mark.slow  # a second python that imports transformers and torch: ~15 s on a loaded 2-core machine
def test_stock_transformers_answers_exactly_as_llava_hf(saved):
    root, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert (config["model_type"], config["architectures"]) == ("llava", ["LlavaForConditionalGeneration"])
    images = real_shaped_images(root / "images")
    output = root / "stock.pt"
    paths = json.dumps({name: str(path) for name, path in images.items()})
    stdout = run_without_llava_hf(EQUALITY_SCRIPT, root, str(folder), paths, str(output))
    assert "classes: LlavaConfig LlavaForConditionalGeneration LlavaProcessor LlavaForConditionalGeneration" in stdout
    stock = torch.load(output)

    model = LlavaHfForConditionalGeneration.from_pretrained(folder)
    processor = LlavaHfProcessor.from_pretrained(folder)
    for name, path in images.items():
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the image?"}]}]
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=Image.open(path), text=prompt, return_tensors="pt")
        tokens = model.generate(**inputs, do_sample=False)[0, inputs.input_ids.shape[1] :]
        assert torch.equal(inputs.input_ids, stock[name]["input_ids"]), name
        assert torch.equal(inputs.pixel_values, stock[name]["pixel_values"]), name
        assert torch.equal(tokens, stock[name]["tokens"]), name
        assert stock[name]["pipeline"] == processor.decode(tokens, skip_special_tokens=True), name


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", markdown, flags=re.DOTALL | re.MULTILINE)


@pytest.mark.slow  # a second python: ~15 s
def test_readme_quickstart_and_model_card_run_without_llava_hf(saved):
    root, folder = saved
    Image.new("RGB", (64, 40), (200, 30, 30)).save(root / "photo.png")
    Image.new("RGB", (64, 40), (30, 200, 30)).save(root / "photo.jpg")
    quickstart = python_blocks(README.read_text())[0]
    assert '"llava_demo/model"' in quickstart and "llava_hf" not in quickstart
    card = (folder / "README.md").read_text()
    how_to_use = python_blocks(card)
    assert len(how_to_use) == 2 and all(str(folder) in block for block in how_to_use)
    assert "trust_remote_code" not in card and "import llava_hf" not in card
    # the Quickstart runs in the folder that holds `llava_demo/model`, as after `llava-hf demo`; the card's snippets
    # name the folder as their repo id
    stdout = run_without_llava_hf("\n\n".join([quickstart, *how_to_use]), root)
    assert stdout.count("\n") >= 4
