"""Shared fixtures: the tiny tokenizer and tiny LLaVA configs/models built in-process (`llava_hf.testing`). Tests import
helpers from `llava_hf.testing` and `tests/helpers/`, never from this module, so test folders may add their own conftest.

The tiny model: CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama with hidden size 32 and the 512-token tokenizer. Everything is offline and takes milliseconds to build.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from llava_hf.testing import load_tiny_tokenizer, make_tiny_config, make_tiny_model, make_tiny_processor  # noqa: E402


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
