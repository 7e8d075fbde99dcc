"""`llava-hf quantize SRC DST --bits 4|8`: the files hold exactly the tensors transformers itself saves for a model
quantized at load time, a process where llava_hf cannot be imported loads them with `from_pretrained(DST)` alone and
answers as the load-time-quantized model does, source files are read one at a time, and bad input exits 2."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from llava_hf.cli import main as llava_hf
from llava_hf.conversion import quantize as quantize_module
from llava_hf.testing import (
    make_image,
    make_tiny_config,
    make_tiny_model,
    make_tiny_processor,
    make_tiny_quantizable_model,
)
from llava_hf.utils.loading import bitsandbytes_config

pytest.importorskip("bitsandbytes")

MESSAGES = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]

# Runs where llava_hf cannot be imported: the paths that hold it (the editable install's .pth entry, PYTHONPATH) are
# dropped before anything is imported. Prints the classes, which layers are quantized, and 4 greedy tokens.
STOCK_SCRIPT = textwrap.dedent(
    """
    import importlib.util, os, sys
    sys.path = [path for path in sys.path if not os.path.isdir(os.path.join(path or ".", "llava_hf"))]
    assert importlib.util.find_spec("llava_hf") is None, "llava_hf is still importable"
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder, image = sys.argv[1], Image.open(sys.argv[2])
    model = AutoModelForImageTextToText.from_pretrained(folder)
    processor = AutoProcessor.from_pretrained(folder)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt")
    print(type(model).__name__, type(processor).__name__)
    print("language", type(model.model.language_model.layers[0].mlp.down_proj).__name__)
    print("vision", type(model.model.vision_tower.encoder.layers[0].mlp.fc1).__name__)
    print("tokens", model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, -4:].tolist())
    print("llava_hf imported:", "llava_hf" in sys.modules)
    """
)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny llava_hf checkpoint (LLaVA-1.5's layout: CLIP, 2-layer projector) whose language model is 64 wide."""
    folder = tmp_path_factory.mktemp("quantize") / "tiny"
    make_tiny_quantizable_model().save_pretrained(folder)
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained(folder)
    return folder


@pytest.mark.parametrize("bits", [4, 8])
def test_the_files_hold_what_transformers_saves_after_quantizing_at_load_time(source, tmp_path, bits):
    argv = ["quantize", str(source), str(tmp_path / "ours"), "--bits", str(bits), "--dtype", "float32"]
    assert llava_hf(argv) == 0
    at_load_time = AutoModelForImageTextToText.from_pretrained(
        source, quantization_config=bitsandbytes_config(bits), dtype=torch.float32, device_map={"": "cpu"}
    )
    at_load_time.save_pretrained(tmp_path / "transformers")
    ours, theirs = (
        load_file(tmp_path / "ours" / "model.safetensors"),
        load_file(tmp_path / "transformers" / "model.safetensors"),
    )
    assert sorted(ours) == sorted(theirs)
    for key, tensor in theirs.items():
        assert ours[key].dtype == tensor.dtype and torch.equal(ours[key], tensor), key
    quantized = [key for key in ours if key.endswith(("weight.absmax", ".SCB"))]
    assert quantized and all(key.startswith("language_model.model.layers.") for key in quantized)
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["model_type"] == "llava" and config["quantization_config"]["llm_int8_skip_modules"] == [
        "model.vision_tower", "model.multi_modal_projector", "lm_head"
    ]  # fmt: skip


@pytest.mark.slow  # a fresh Python process per case
@pytest.mark.parametrize("bits", [4, 8])
def test_stock_transformers_loads_it_without_llava_hf_and_answers_as_load_time_quantization(source, tmp_path, bits):
    from llava_hf.utils.loading import load_checkpoint

    destination = tmp_path / f"llava-{bits}bit"
    argv = ["quantize", str(source), str(destination), "--bits", str(bits), "--dtype", "float32"]
    assert llava_hf(argv) == 0
    make_image(1).save(tmp_path / "image.png")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", STOCK_SCRIPT, str(destination), str(tmp_path / "image.png")],
        env=environment, capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "LlavaForConditionalGeneration LlavaProcessor" in result.stdout
    assert f"language {'Linear4bit' if bits == 4 else 'Linear8bitLt'}" in result.stdout
    assert "vision Linear" in result.stdout and "llava_hf imported: False" in result.stdout

    # float32 as the checkpoint was written (llava_hf's CPU `auto` with quantization would be bfloat16)
    model, processor = load_checkpoint(
        str(source), dtype="float32", device="cpu", quantization=bitsandbytes_config(bits)
    )
    prompt = processor.apply_chat_template(MESSAGES, add_generation_prompt=True)
    inputs = processor(images=make_image(1), text=prompt, return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)[0, -4:].tolist()
    assert f"tokens {expected}" in result.stdout


def test_sharded_sources_are_read_and_written_one_file_at_a_time(source, tmp_path, monkeypatch):
    sharded = tmp_path / "sharded"
    model = AutoModelForImageTextToText.from_pretrained(source)
    model.save_pretrained(sharded, max_shard_size="100KB")
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained(sharded)
    files = sorted(json.loads((sharded / "model.safetensors.index.json").read_text())["weight_map"].values())
    assert len(set(files)) > 2

    import safetensors

    open_now, most_open = [], []
    real_safe_open = safetensors.safe_open

    class TrackedOpen:
        def __init__(self, path, **kwargs):
            self.file = real_safe_open(path, **kwargs)

        def __enter__(self):
            open_now.append(self)
            most_open.append(len(open_now))
            return self.file.__enter__()

        def __exit__(self, *exc):
            open_now.remove(self)
            return self.file.__exit__(*exc)

    monkeypatch.setattr(safetensors, "safe_open", TrackedOpen)
    result = quantize_module.quantize_checkpoint(sharded, tmp_path / "out", 4)
    assert max(most_open) == 1 and len(most_open) == len(set(files))
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == sorted(set(files))
    assert result.destination_bytes < result.source_bytes  # the tiny model is mostly embeddings and the tower
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert type(loaded.model.language_model.layers[1].self_attn.o_proj).__name__ == "Linear4bit"


def test_a_checkpoint_the_builtin_cannot_express_stays_llava_hf(tmp_path):
    folder = tmp_path / "linear"
    config = make_tiny_quantizable_model().config
    config.projector_type = "linear"
    make_tiny_model(config).save_pretrained(folder)
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained(folder)
    assert llava_hf(["quantize", str(folder), str(tmp_path / "out"), "--bits", "8"]) == 0
    assert json.loads((tmp_path / "out" / "config.json").read_text())["model_type"] == "llava_hf"
    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "out")
    assert type(model).__name__ == "LlavaHfForConditionalGeneration"
    assert type(model.model.language_model.layers[0].self_attn.q_proj).__name__ == "Linear8bitLt"


def test_bad_input_exits_2_with_one_line(source, tmp_path, capsys):
    (tmp_path / "exists").mkdir()
    make_tiny_config().text_config.save_pretrained(tmp_path / "llama")  # a config, but not a LLaVA one
    cases = [
        ([str(source), str(tmp_path / "x"), "--bits", "3"], "invalid choice: '3' (choose from 4, 8)"),
        ([str(tmp_path / "missing"), str(tmp_path / "x")], "is not a folder"),
        ([str(source), str(tmp_path / "exists")], "already exists; remove it or choose another destination"),
        ([str(tmp_path / "llama"), str(tmp_path / "x")], "is a 'llama' checkpoint; quantize takes llava_hf"),
    ]
    for argv, message in cases:
        try:
            status = llava_hf(["quantize", *argv])
        except SystemExit as exit:  # argparse errors exit from inside the parser
            status = exit.code
        assert status == 2
        error = capsys.readouterr().err
        assert message in error and error.startswith("llava-hf quantize: error:") and error.count("\n") == 1, error
    assert not (tmp_path / "x").exists()


def test_the_unquantized_rest_is_stored_and_loaded_in_the_chosen_dtype(source, tmp_path):
    from llava_hf.utils.loading import load_checkpoint

    assert llava_hf(["quantize", str(source), str(tmp_path / "q4"), "--bits", "4"]) == 0  # default: bfloat16
    assert json.loads((tmp_path / "q4" / "config.json").read_text())["dtype"] == "bfloat16"
    model, _ = load_checkpoint(str(tmp_path / "q4"), device="cpu")
    assert type(model.model.language_model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    floating = {name: p.dtype for name, p in model.named_parameters() if p.is_floating_point()}
    assert set(floating.values()) == {torch.bfloat16}, floating
    assert llava_hf(["quantize", str(source), str(tmp_path / "keep"), "--bits", "8", "--dtype", "auto"]) == 0
    model, _ = load_checkpoint(str(tmp_path / "keep"), device="cpu")
    assert model.model.vision_tower.encoder.layers[0].mlp.fc1.weight.dtype == torch.float32  # as the source
