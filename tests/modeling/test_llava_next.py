"""LLaVA-1.6 classes: saved in the built-in llava_next format when it can express them (else `llava_hf_next`), read
back into llava_hf's classes with the same answers; batched multi-image generation equals one-by-one; config and
image-token checks name the fix."""

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaNextForConditionalGeneration

from llava_hf.modeling import LlavaHfNextConfig, LlavaHfNextForConditionalGeneration
from llava_hf.processing import LlavaHfNextProcessor
from llava_hf.testing import make_image, make_tiny_config, make_tiny_next_model, make_tiny_next_processor

PROMPTS = ["USER: <image>\nWhat is it? ASSISTANT:", "USER: <image> then <image>: which is taller? ASSISTANT:"]


def batch_for(processor, prompts=PROMPTS):
    images = [[make_image(0, (40, 48))], [make_image(1, (100, 20)), make_image(2, (20, 100))]][: len(prompts)]
    return processor(text=prompts, images=images, return_tensors="pt", padding=True)


@pytest.mark.parametrize("merge, model_type", [("spatial_unpad", "llava_next"), ("flat", "llava_hf_next")])
def test_save_format_and_reload_give_the_same_logits(tmp_path, merge, model_type):
    model = make_tiny_next_model(mm_patch_merge_type=merge)
    processor = make_tiny_next_processor(config=model.config)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == model_type
    batch = batch_for(processor)
    with torch.no_grad():
        expected = model(**batch).logits
        reloaded = LlavaHfNextForConditionalGeneration.from_pretrained(tmp_path)
        assert torch.equal(reloaded(**batch).logits, expected)
        auto = AutoModelForImageTextToText.from_pretrained(tmp_path)
        assert torch.allclose(auto(**batch).logits, expected, atol=1e-6)
    ours = LlavaHfNextProcessor.from_pretrained(tmp_path)
    assert ours.mm_patch_merge_type == merge and torch.equal(batch_for(ours)["input_ids"], batch["input_ids"])
    if merge == "spatial_unpad":  # plain transformers' own classes
        assert type(auto) is LlavaNextForConditionalGeneration
        assert type(AutoProcessor.from_pretrained(tmp_path)).__name__ == "LlavaNextProcessor"
    else:  # the built-in cannot merge "flat": our classes, registered by `import llava_hf`
        assert type(auto) is LlavaHfNextForConditionalGeneration
        assert type(AutoProcessor.from_pretrained(tmp_path)) is LlavaHfNextProcessor


def test_batched_multi_image_generation_equals_one_by_one():
    model, processor = make_tiny_next_model(), make_tiny_next_processor()
    processor.tokenizer.padding_side = "left"
    batched = model.generate(**batch_for(processor), max_new_tokens=5, do_sample=False)
    for row, prompt in enumerate(PROMPTS):
        images = [[make_image(0, (40, 48))], [make_image(1, (100, 20)), make_image(2, (20, 100))]][row]
        alone = processor(text=prompt, images=images, return_tensors="pt")
        single = model.generate(**alone, max_new_tokens=5, do_sample=False)
        assert batched[row, -5:].tolist() == single[0, -5:].tolist()


def test_token_mismatch_names_the_counts():
    model, processor = make_tiny_next_model(), make_tiny_next_processor()
    batch = batch_for(processor)
    batch["image_sizes"] = batch["image_sizes"].flip(-1)  # sizes that do not match the tokens written for them
    with pytest.raises(ValueError, match=r"3 image\(s\) \(\[\d+, \d+, \d+\]\)"):
        model(**batch)
    with pytest.raises(ValueError, match="needs image_sizes"):
        model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"])


def test_config_refuses_what_the_merge_cannot_lay_out():
    with pytest.raises(ValueError, match="multiple of the vision tower's image_size"):
        make_tiny_config(config_class=LlavaHfNextConfig, image_grid_pinpoints=[[32, 48]])
    with pytest.raises(ValueError, match="CLS token"):
        make_tiny_config(config_class=LlavaHfNextConfig, vision_feature_select_strategy="full")
