"""The tiny LLaVA that tests, benchmarks and examples share (like transformers' `testing_utils`): one definition.

    from llava_hf.testing import make_tiny_model, make_tiny_processor
    model, processor = make_tiny_model(), make_tiny_processor()      # built in-process in milliseconds, offline

The tiny model: a CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama of width 32, and a 512-token byte-level BPE tokenizer shaped like a real LLaVA one (`<image>` and `<pad>` as
special tokens), shipped with the package in `testing_assets/tiny_tokenizer/` (tests/assets/make_tiny_tokenizer.py
regenerates it). Also: transformers' built-in Llava holding the same weights (parity checks), noise images, and a
synthetic LLaVA JSON + image folder for the tiny training recipes.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig
from transformers import LlavaConfig as BuiltinLlavaConfig
from transformers import LlavaForConditionalGeneration as BuiltinLlava

from .modeling import LlavaHfConfig, LlavaHfForConditionalGeneration
from .processing import LlavaHfProcessor, build_image_processor

TINY_TOKENIZER_DIR = Path(__file__).with_name("testing_assets") / "tiny_tokenizer"
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
    text_config = make_tiny_text_config(tokenizer)
    kwargs = dict(vision_config=vision_config, text_config=text_config, image_token_index=tokenizer.image_token_id)
    kwargs.update(overrides)
    return LlavaHfConfig(**kwargs)


def make_tiny_text_config(tokenizer, config_class=LlamaConfig):
    """A 2-layer LM of width 32 over the tiny tokenizer; `config_class` picks the family (Llama, Mistral, Qwen2)."""
    return config_class(
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


def builtin_llava_config(config: LlavaHfConfig) -> BuiltinLlavaConfig:
    """transformers' built-in LlavaConfig describing the same model as our `config` (mlp2x_gelu projector)."""
    return BuiltinLlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )


def builtin_llava_twin(model: LlavaHfForConditionalGeneration) -> BuiltinLlava:
    """transformers' built-in Llava with exactly our weights (the in-memory module names are the same)."""
    builtin = BuiltinLlava(builtin_llava_config(model.config))
    missing, unexpected = builtin.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    builtin.generation_config = model.generation_config
    return builtin.eval()


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


def make_tiny_parts(folder: Path, real_shaped: Path) -> tuple[Path, Path]:
    """Copy the stand-ins of openai/clip-vit-large-patch14-336 (a full CLIPModel, old-format preprocessor config) and
    lmsys/vicuna-7b-v1.5 (SentencePiece tokenizer without `<image>` or pad) from `real_shaped` (the repository's
    tests/assets/real_shaped) to `folder`; returns their two folders. They are shaped like the real parts, so a tiny
    run takes the same path as the 7B recipes."""
    vision_dir, language_dir = folder / "vision", folder / "language"
    shutil.copytree(real_shaped / "clip-vit-large-patch14-336", vision_dir, dirs_exist_ok=True)
    shutil.copytree(real_shaped / "vicuna-7b-v1.5", language_dir, dirs_exist_ok=True)
    return vision_dir, language_dir


def make_tiny_data(folder: Path, num_rows: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic LLaVA JSON (original format) and its image folder; returns (json path, image folder)."""
    from .data.synthetic import make_shape_rows

    image_folder = folder / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    records = []
    for row in make_shape_rows(num_rows, seed=seed, image_size=64, lengths="realistic"):
        record = {"id": row["id"], "conversations": []}
        if row["images"]:
            record["image"] = f"{row['id']}.png"
            row["images"][0].save(image_folder / record["image"])
        for message in row["messages"]:
            text = "".join(part["text"] for part in message["content"] if part["type"] == "text")
            has_image = any(part["type"] == "image" for part in message["content"])
            speaker = "human" if message["role"] == "user" else "gpt"
            record["conversations"].append({"from": speaker, "value": ("<image>\n" if has_image else "") + text})
        records.append(record)
    json_path = folder / "tiny_llava.json"
    json_path.write_text(json.dumps(records, indent=1))
    return json_path, image_folder
