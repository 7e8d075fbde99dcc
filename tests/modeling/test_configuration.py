import pytest
from huggingface_hub.errors import StrictDataclassFieldValidationError
from transformers import AutoConfig

from llava_hf import LlavaConfig, LlavaHfConfig


def test_defaults_match_llava_1_5():
    config = LlavaHfConfig()
    assert config.model_type == "llava_hf"
    assert config.vision_config.model_type == "clip_vision_model"
    assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
    assert config.image_seq_length == 576  # 24 x 24 patches, CLS dropped
    assert config.text_config.model_type == "llama"
    assert config.projector_type == "mlp2x_gelu" and config.projector_depth == 2
    assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
    assert config.image_aspect_ratio == "pad"
    assert config.image_token_id == config.image_token_index == 32000
    assert LlavaConfig is LlavaHfConfig


@pytest.mark.parametrize(
    ("vision", "text", "strategy", "expected_tokens"),
    [
        (
            {"model_type": "clip_vision_model", "image_size": 224, "patch_size": 14},
            {"model_type": "llama"},
            "default",
            256,
        ),
        (
            {"model_type": "clip_vision_model", "image_size": 336, "patch_size": 14},
            {"model_type": "mistral"},
            "full",
            577,
        ),
        (
            {"model_type": "siglip_vision_model", "image_size": 384, "patch_size": 14},
            {"model_type": "qwen2"},
            "full",
            729,
        ),
    ],
)
def test_towers_and_token_count(vision, text, strategy, expected_tokens):
    config = LlavaHfConfig(vision_config=vision, text_config=text, vision_feature_select_strategy=strategy)
    assert config.image_seq_length == expected_tokens
    assert config.text_config.model_type == text["model_type"]


@pytest.mark.parametrize(
    "projector_type, depth", [("linear", 1), ("identity", 0), ("mlp1x_gelu", 1), ("mlp4x_gelu", 4)]
)
def test_projector_types(projector_type, depth):
    text = {"model_type": "llama", "hidden_size": 1024} if projector_type == "identity" else None
    assert LlavaHfConfig(projector_type=projector_type, text_config=text).projector_depth == depth


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"projector_type": "mlp2x_relu"}, "mlp{N}x_gelu"),
        ({"projector_type": "mlp0x_gelu"}, "mlp{N}x_gelu"),
        ({"projector_type": "identity"}, "identity"),
        ({"vision_feature_layer": 25}, "out of range"),
        ({"vision_feature_layer": [-2, -30]}, "out of range"),
        ({"vision_feature_layer": []}, "empty"),
        ({"image_seq_length": 100}, "leave image_seq_length unset"),
        ({"vision_config": {"model_type": "siglip_vision_model"}}, "has none"),
    ],
)
def test_invalid_values_raise_with_the_fix(kwargs, message):
    with pytest.raises(ValueError) as error:
        LlavaHfConfig(**kwargs)
    assert message in str(error.value)


def test_literal_fields_are_validated():
    with pytest.raises(StrictDataclassFieldValidationError, match="default"):
        LlavaHfConfig(vision_feature_select_strategy="patch")
    with pytest.raises(StrictDataclassFieldValidationError, match="pad"):
        LlavaHfConfig(image_aspect_ratio="anyres")


def test_multi_layer_features_widen_the_projector_input():
    config = LlavaHfConfig(vision_feature_layer=[-2, -5])
    assert config.projector_input_size == 2048


def test_tied_embeddings_are_lifted_from_text_config():
    assert LlavaHfConfig(text_config={"model_type": "qwen2", "tie_word_embeddings": True}).tie_word_embeddings


def test_save_and_reload_through_autoconfig(tmp_path):
    config = LlavaHfConfig(projector_type="mlp3x_gelu", vision_feature_layer=[-2, -1], image_aspect_ratio="square")
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is LlavaHfConfig
    for field in ("projector_type", "vision_feature_layer", "image_aspect_ratio", "image_seq_length"):
        assert getattr(reloaded, field) == getattr(config, field)
