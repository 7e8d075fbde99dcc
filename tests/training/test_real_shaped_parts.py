"""Building a LLaVA model from parts shaped like the real ones (tests/assets/real_shaped/): tokenizers with no
`<image>` (Vicuna, Mistral, Qwen2) and often no pad or BOS, a full CLIPModel folder with an old-format preprocessor
config. transformers 5 refused the `<image>` token the way we used to add it; these tests build from the real shapes.
"""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from llava_hf import LlavaHfProcessor, build_image_processor
from llava_hf.data import LlavaCollator
from llava_hf.data.synthetic import make_shape_rows
from llava_hf.training import build_from_parts

REAL_SHAPED = Path(__file__).resolve().parents[1] / "assets" / "real_shaped"
CLIP = REAL_SHAPED / "clip-vit-large-patch14-336"
# language model folder -> (pad token after building, whether the tokenizer adds BOS)
LANGUAGE_MODELS = {
    "vicuna-7b-v1.5": ("<unk>", True),
    "mistral-7b-instruct-v0.2": ("<unk>", True),
    "qwen2-7b-instruct": ("<|endoftext|>", False),
}


def test_the_stand_ins_have_the_real_shapes():
    vicuna = AutoTokenizer.from_pretrained(REAL_SHAPED / "vicuna-7b-v1.5")
    assert sorted(path.name for path in (REAL_SHAPED / "vicuna-7b-v1.5").glob("tokenizer*")) == [
        "tokenizer.model",
        "tokenizer_config.json",
    ]
    assert (
        vicuna.pad_token is None
        and getattr(vicuna, "image_token", None) is None
        and "<image>" not in vicuna.get_vocab()
    )
    qwen2 = AutoTokenizer.from_pretrained(REAL_SHAPED / "qwen2-7b-instruct")
    assert qwen2.bos_token is None and qwen2.unk_token is None and "<image>" not in qwen2.get_vocab()
    clip = json.loads((CLIP / "config.json").read_text())
    assert clip["architectures"] == ["CLIPModel"] and "text_config" in clip and "vision_config" in clip
    preprocessor = json.loads((CLIP / "preprocessor_config.json").read_text())
    assert preprocessor["feature_extractor_type"] == "CLIPFeatureExtractor" and preprocessor["crop_size"] == 32
    assert preprocessor["do_center_crop"] is True and isinstance(preprocessor["size"], int)


@pytest.mark.parametrize("language_model", sorted(LANGUAGE_MODELS))
def test_build_from_real_shaped_parts(tmp_path, language_model):
    pad_token, adds_bos = LANGUAGE_MODELS[language_model]
    model, processor = build_from_parts(str(CLIP), str(REAL_SHAPED / language_model))
    tokenizer = processor.tokenizer
    original_vocabulary = len(AutoTokenizer.from_pretrained(REAL_SHAPED / language_model))
    # <image> is one new special token, named on the tokenizer, with an embedding row
    assert tokenizer.image_token == "<image>" and tokenizer.image_token_id == original_vocabulary
    assert model.config.image_token_id == processor.image_token_id == original_vocabulary
    assert model.get_input_embeddings().weight.shape[0] == len(tokenizer) == original_vocabulary + 1
    assert tokenizer.pad_token == pad_token and model.config.text_config.pad_token_id == tokenizer.pad_token_id
    assert tokenizer("a <image> b", add_special_tokens=False).input_ids.count(processor.image_token_id) == 1

    # The collator's batch: BOS where the tokenizer has one, image positions never supervised, and a forward pass.
    rows = make_shape_rows(2, seed=3, image_size=40)
    batch = LlavaCollator(processor)(rows)
    first = batch["input_ids"][0, 0].item()
    assert (first == tokenizer.bos_token_id) is adds_bos
    image_positions = batch["input_ids"] == processor.image_token_id
    assert image_positions.sum() == 16 * sum(len(row["images"]) for row in rows)
    assert (batch["labels"][image_positions] == -100).all()
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)

    # Saved and reloaded, the processor keeps <image> as a named special token.
    processor.save_pretrained(tmp_path)
    reloaded = LlavaHfProcessor.from_pretrained(tmp_path)
    assert reloaded.image_token_id == processor.image_token_id and reloaded.tokenizer.pad_token == pad_token


def test_build_from_parts_is_deterministic():
    first, _ = build_from_parts(str(CLIP), str(REAL_SHAPED / "vicuna-7b-v1.5"))
    second, _ = build_from_parts(str(CLIP), str(REAL_SHAPED / "vicuna-7b-v1.5"))
    # the projector is fresh (random) but the grown embedding rows are not: the same parts give the same LLM
    for (name, tensor), (_, other) in zip(
        first.model.language_model.state_dict().items(), second.model.language_model.state_dict().items()
    ):
        assert torch.equal(tensor, other), name
    assert torch.equal(first.lm_head.weight, second.lm_head.weight)


def test_the_processor_error_for_a_tokenizer_without_image_token_names_a_call_that_works():
    tokenizer = AutoTokenizer.from_pretrained(REAL_SHAPED / "vicuna-7b-v1.5")
    with pytest.raises(ValueError, match="not a special token") as error:
        LlavaHfProcessor(image_processor=build_image_processor(32), tokenizer=tokenizer, image_seq_length=16)
    assert "AutoTokenizer.from_pretrained(name_or_path, image_token='<image>')" in str(error.value)
    fixed = AutoTokenizer.from_pretrained(REAL_SHAPED / "vicuna-7b-v1.5", image_token="<image>")  # the advice
    processor = LlavaHfProcessor(image_processor=build_image_processor(32), tokenizer=fixed, image_seq_length=16)
    assert processor.image_token_id == len(tokenizer)
