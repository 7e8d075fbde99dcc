"""The processor expands `<image>`, checks counts per sample and never lets truncation cut an image silently."""

import pytest
import torch
from transformers import TokenizersBackend

from llava_hf import LlavaHfProcessor
from llava_hf.testing import TINY_IMAGE_TOKENS, make_image, make_tiny_processor


def test_each_placeholder_becomes_image_seq_length_tokens(processor):
    encoded = processor(
        images=[make_image(1), make_image(2)], text="<image>\nfirst <image>\nsecond", return_tensors="pt"
    )
    assert (encoded.input_ids == processor.image_token_id).sum() == 2 * TINY_IMAGE_TOKENS
    assert encoded.input_ids[0, 0] == processor.tokenizer.bos_token_id


def test_placeholder_count_must_equal_images_per_sample(processor):
    with pytest.raises(ValueError, match=r"sample 1 has 2 <image> placeholder\(s\) but 1 image"):
        processor(images=[[make_image(1)], [make_image(2)]], text=["<image>a", "<image><image>b"], padding=True)
    with pytest.raises(ValueError, match=r"3 <image> placeholder\(s\) \(\[1, 2\] per sample\) but 2 image"):
        processor(images=[make_image(1), make_image(2)], text=["<image>a", "<image><image>b"], padding=True)
    with pytest.raises(ValueError, match="sample 0 contains <image> but no images"):
        processor(text=["<image>a"])


def test_truncation_through_image_tokens_raises(processor):
    with pytest.raises(ValueError, match="truncation"):
        processor(images=make_image(1), text="hello <image>", truncation=True, max_length=8)
    # truncation that keeps every image token is fine
    encoded = processor(images=make_image(1), text="<image> a long tail of words", truncation=True, max_length=20)
    assert len(encoded["input_ids"][0]) == 20


def test_image_token_must_be_special(tokenizer):
    from tokenizers import Tokenizer, models

    plain = TokenizersBackend(
        tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0, "a": 1}, unk_token="<unk>")), unk_token="<unk>"
    )
    with pytest.raises(ValueError, match=r"from_pretrained\(name_or_path, image_token=.<image>.\)"):
        make_tiny_processor(plain)


def test_template_selection_by_name(tokenizer):
    assert "chatml_direct" in make_tiny_processor(tokenizer, chat_template="chatml_direct").chat_template
    custom = "{{ messages[0]['content'] }}"
    assert make_tiny_processor(tokenizer, chat_template=custom).chat_template == custom


def test_ordinary_calls_behave_as_the_builtin_processor(processor):
    """No guessing of the caller: `add_special_tokens` / `padding_side` and tokenizing a whole conversation give what
    transformers' built-in LlavaProcessor gives for the same settings."""
    builtin = processor.to_builtin()
    bos = processor.tokenizer.bos_token_id
    for settings in ({}, {"add_special_tokens": False}, {"add_special_tokens": False, "padding_side": "right"}):
        for padding_side in ("left", "right"):
            settings = {**settings, "padding_side": settings.get("padding_side", padding_side)}
            texts = ["<image> hi", "<image>\nWhat is it? A longer question."]
            images = [make_image(0), make_image(1)]
            ours = processor(images=images, text=texts, padding=True, return_tensors="pt", **settings)
            theirs = builtin(images=images, text=texts, padding=True, return_tensors="pt", **settings)
            assert torch.equal(ours["input_ids"], theirs["input_ids"]) and torch.equal(
                ours["attention_mask"], theirs["attention_mask"]
            )
            assert (ours["input_ids"] == bos).any() == (settings.get("add_special_tokens") is not False)
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Noise."}]},
    ]
    for processor_kwargs in ({}, {"add_special_tokens": False}):
        arguments = dict(tokenize=True, return_dict=True, processor_kwargs=processor_kwargs)
        ours = processor.apply_chat_template(conversation, images=[make_image(2)], **arguments)
        theirs = builtin.apply_chat_template(conversation, images=[make_image(2)], **arguments)
        assert ours["input_ids"] == theirs["input_ids"]


@pytest.mark.parametrize("template", ["test template", "vicuna_v1", "{{ 'x' }}"])
def test_saved_chat_template_reloads_verbatim(processor, tmp_path, template):
    processor.chat_template = template
    processor.save_pretrained(tmp_path)
    assert LlavaHfProcessor.from_pretrained(tmp_path).chat_template == template
    # a template the caller passes is still resolved by name
    assert "USER:" in LlavaHfProcessor.from_pretrained(tmp_path, chat_template="vicuna_v1").chat_template
