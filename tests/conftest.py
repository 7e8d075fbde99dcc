"""Shared fixtures: a tiny tokenizer from tests/assets, tiny LLaVA configs/models built in-process, test images.

The tiny model: CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama with hidden size 32 and the 512-token tokenizer. Everything is offline and takes milliseconds to build.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig  # noqa: E402

from llava_hf import LlavaHfConfig, LlavaHfForConditionalGeneration, LlavaHfProcessor, build_image_processor  # noqa: E402

ASSETS = Path(__file__).parent / "assets"
TINY_TOKENIZER_DIR = ASSETS / "tiny_tokenizer"
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_IMAGE_TOKENS = (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2


def load_tiny_tokenizer():
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


def make_tiny_config(tokenizer=None, **overrides) -> LlavaHfConfig:
    tokenizer = tokenizer or load_tiny_tokenizer()
    vision_config = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=TINY_IMAGE_SIZE,
        patch_size=TINY_PATCH_SIZE,
        projection_dim=32,
    )
    text_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    kwargs = dict(vision_config=vision_config, text_config=text_config, image_token_index=tokenizer.image_token_id)
    kwargs.update(overrides)
    return LlavaHfConfig(**kwargs)


def make_tiny_model(config=None, seed: int = 0) -> LlavaHfForConditionalGeneration:
    torch.manual_seed(seed)
    model = LlavaHfForConditionalGeneration(config or make_tiny_config())
    model.generation_config.max_new_tokens = 8
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model.eval()


def make_tiny_processor(tokenizer=None, image_aspect_ratio="pad", chat_template=None) -> LlavaHfProcessor:
    tokenizer = tokenizer or load_tiny_tokenizer()
    return LlavaHfProcessor(
        image_processor=build_image_processor(TINY_IMAGE_SIZE, image_aspect_ratio),
        tokenizer=tokenizer,
        chat_template=chat_template,
        image_seq_length=TINY_IMAGE_TOKENS,
    )


def make_image(seed: int = 0, size=(40, 48), mode="RGB") -> Image.Image:
    """Random-noise image of `size` (width, height)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


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
