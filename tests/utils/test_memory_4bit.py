"""A checkpoint stored in 4-bit, loaded for inference on CPU: the layers are repacked for bitsandbytes' CPU kernel
while loading, the answers are those of the stock model (which repacks on its first forward), the checkpoint's file
pages of the replaced weights are handed back, and every command that answers (generate, chat, serve, evaluate)
loads this way. The 13B peak RSS is in benchmarks/RESULTS_quantized.md."""

import io
import shutil
import sys
from pathlib import Path

import pytest
import torch

from llava_hf.cli import main as llava_hf
from llava_hf.modeling import LlavaHfForConditionalGeneration
from llava_hf.serving.generate_command import user_message
from llava_hf.serving.inference import encode_conversation
from llava_hf.testing import (
    load_tiny_tokenizer,
    make_image,
    make_tiny_config,
    make_tiny_model,
    make_tiny_processor,
    make_tiny_quantizable_model,
    make_tiny_text_config,
)
from llava_hf.utils import loading
from llava_hf.utils.loading import load_checkpoint

bitsandbytes_functional = pytest.importorskip("bitsandbytes.functional")
# bitsandbytes repacks 4-bit weights for its CPU kernel only where the CPU has AVX512-BF16; elsewhere the weights
# stay views of the file (one copy already) and there is nothing to release.
repacks_here = bitsandbytes_functional.has_avx512bf16()
SCIENCEQA = Path(__file__).resolve().parents[1] / "assets" / "evaluation" / "scienceqa"


def quantized(source: LlavaHfForConditionalGeneration, folder: Path, *flags: str) -> Path:
    source.save_pretrained(folder / "source")
    make_tiny_processor(chat_template="vicuna_v1").save_pretrained(folder / "source")
    assert llava_hf(["quantize", str(folder / "source"), str(folder / "4bit"), "--bits", "4", *flags]) == 0
    return folder / "4bit"


@pytest.fixture(scope="module", params=["bfloat16", "float32"])
def checkpoint(request, tmp_path_factory) -> Path:
    """The tiny 4-bit checkpoint, its unquantized rest in bfloat16 (the default) or float32 (the layers' inputs are
    float32 then, which bitsandbytes takes as their compute dtype)."""
    folder = tmp_path_factory.mktemp(f"repack-{request.param}")
    return quantized(make_tiny_quantizable_model(), folder, "--dtype", request.param)


def count_4bit_layers(model) -> int:
    return sum(type(module).__name__ == "Linear4bit" for module in model.modules())


def test_the_answers_are_those_of_the_stock_model(checkpoint):
    ours, processor = load_checkpoint(str(checkpoint), device="cpu")
    stock = LlavaHfForConditionalGeneration.from_pretrained(checkpoint, dtype="auto").eval()
    inputs = encode_conversation(processor, [user_message("What is it?", with_image=True)], [make_image(1)])
    with torch.no_grad():
        assert torch.equal(ours(**inputs).logits, stock(**inputs).logits)
        settings = dict(max_new_tokens=8, min_new_tokens=8, do_sample=False)
        assert torch.equal(ours.generate(**inputs, **settings), stock.generate(**inputs, **settings))


def resident_file_bytes(folder: Path) -> int:
    """Bytes of this process's resident pages mapped from the safetensors files of `folder` (/proc/self/smaps)."""
    total, counting = 0, False
    with open("/proc/self/smaps") as handle:
        for line in handle:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: address perms offset dev inode [path]
                counting = len(fields) == 6 and fields[5].startswith(str(folder)) and fields[5].endswith(".safetensors")
            elif counting and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
@pytest.mark.skipif(not repacks_here, reason="bitsandbytes keeps the stored layout on a CPU without AVX512-BF16")
def test_the_file_pages_of_the_replaced_weights_are_released(tmp_path):
    # 4-bit weights of 6 MB a layer (1024 wide): reading the small tensors between them (norms) maps the kernel's
    # fault-around window (64 KiB) of their neighbours back in, which must stay small beside them
    tokenizer = load_tiny_tokenizer()
    text_config = make_tiny_text_config(tokenizer)
    text_config.hidden_size, text_config.intermediate_size, text_config.head_dim = 1024, 2816, 256
    folder = quantized(make_tiny_model(make_tiny_config(tokenizer, text_config=text_config)), tmp_path)
    shutil.copytree(folder, tmp_path / "stock")  # its own path: its mapping is told apart in /proc/self/smaps
    ours, processor = load_checkpoint(str(folder), device="cpu")
    stock = LlavaHfForConditionalGeneration.from_pretrained(tmp_path / "stock", dtype="auto").eval()
    inputs = encode_conversation(processor, [user_message("What is it?", with_image=True)], [make_image(1)])
    with torch.no_grad():
        ours(**inputs), stock(**inputs)
    packed = sum(
        module.weight.numel() * module.weight.element_size()
        for module in ours.modules()
        if type(module).__name__ == "Linear4bit"
    )
    assert packed > 10 * 2**20
    kept_by_stock, kept_by_ours = resident_file_bytes(tmp_path / "stock"), resident_file_bytes(folder)
    assert kept_by_stock >= packed  # the stock model: the file's pages and the repacked copy
    assert kept_by_ours <= kept_by_stock - 0.8 * packed, (kept_by_ours, kept_by_stock, packed)


class Spy:
    """Counts the layers `load_checkpoint` repacks while loading."""

    def __init__(self, monkeypatch):
        self.repacked = []
        real = loading.repack_4bit_releasing_pages
        monkeypatch.setattr(loading, "repack_4bit_releasing_pages", lambda model: self.record(real(model), model))

    def record(self, count: int, model) -> int:
        self.repacked.append((count, count_4bit_layers(model)))
        return count


@pytest.mark.slow  # four commands, each loading the checkpoint
def test_generate_chat_serve_and_evaluate_load_repacked(tmp_path, monkeypatch):
    from llava_hf.evaluation import evaluate_command as evaluate
    from llava_hf.serving import chat_command as chat
    from llava_hf.serving import generate_command as generate
    from llava_hf.serving import server
    from llava_hf.serving.arguments import ModelArguments, ServeArguments

    folder = quantized(make_tiny_quantizable_model(), tmp_path)
    make_image(1).save(tmp_path / "photo.png")
    spy = Spy(monkeypatch)
    common = ["--model", str(folder), "--device", "cpu", "--max_new_tokens", "2"]
    assert generate.main([*common, "--image", str(tmp_path / "photo.png"), "--prompt", "What is it?"]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("/quit\n"))
    assert chat.main([*common, "--image", str(tmp_path / "photo.png")]) == 0
    arguments = ["--task", "scienceqa", "--data", str(SCIENCEQA), "--output_dir", str(tmp_path / "eval")]
    assert evaluate.main([*common, *arguments, "--limit", "1", "--no_progress"]) == 0

    class Listening:  # what `serve` would run forever once loaded: returns at once here
        def run(self, sockets):
            for sock in sockets:
                sock.close()

    monkeypatch.setattr(server, "uvicorn_server", lambda app: Listening())
    assert server.serve(ModelArguments(model=str(folder), device="cpu"), ServeArguments(port=0)) == 0
    assert len(spy.repacked) == 4
    for count, layers in spy.repacked:
        assert layers > 0 and count == (layers if repacks_here else 0)
