"""Shared fixtures: the tiny tokenizer and tiny LLaVA configs/models built in-process (`llava_hf.testing`). Tests import
helpers from `llava_hf.testing` and `tests/helpers/`, never from this module, so test folders may add their own conftest.

The tiny model: CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama with hidden size 32 and the 512-token tokenizer. Everything is offline and takes milliseconds to build.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A fresh `datasets` cache for each test session, set before `datasets` is imported: what llava_hf derives from data
# files (Arrow rows, preflight reports) is cached there by content, so a cache left by an earlier session would turn a
# test's first run into a cache hit.
_DATASETS_CACHE = tempfile.mkdtemp(prefix="llava_hf_tests_datasets_")
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)

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
