"""Shared fixtures: the tiny tokenizer, tiny LLaVA configs/models built in-process, test images (`llava_hf.testing`).

The tiny model: CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama with hidden size 32 and the 512-token tokenizer. Everything is offline and takes milliseconds to build.
"""

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llava_hf.testing import (  # noqa: E402, F401  re-exported: tests import these with `from conftest import ...`
    TINY_IMAGE_SIZE,
    TINY_IMAGE_TOKENS,
    TINY_PATCH_SIZE,
    builtin_llava_config,
    builtin_llava_twin,
    load_tiny_tokenizer,
    make_image,
    make_tiny_config,
    make_tiny_model,
    make_tiny_processor,
    make_tiny_text_config,
)

ASSETS = Path(__file__).resolve().parent / "assets"
REAL_SHAPED = ASSETS / "real_shaped"  # stand-ins shaped like the real CLIP / Vicuna / Mistral / Qwen2 parts


@pytest.fixture
def tokenizer():
    return load_tiny_tokenizer()


@pytest.fixture
def config(tokenizer):
    return make_tiny_config(tokenizer)


@pytest.fixture
def model(config):
    return make_tiny_model(config)


@pytest.fixture
def processor(tokenizer):
    return make_tiny_processor(tokenizer)
