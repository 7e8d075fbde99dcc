"""The processor expands `<image>`, checks counts per sample and never lets truncation cut an image silently."""

import pytest
from transformers import TokenizersBackend

from conftest import TINY_IMAGE_TOKENS, make_image, make_tiny_processor


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


def test_add_special_tokens_false_is_kept_unless_padding_side_says_trl_training(processor):
    """A plain call keeps `add_special_tokens=False` (no BOS); TRL's explicit right padding raises, its left-padded
    prompts get the BOS (the processor's guard for SFTTrainer without a data_collator)."""
    bos = processor.tokenizer.bos_token_id
    plain = processor(images=make_image(0), text="<image>\nWhat is it?", add_special_tokens=False)
    assert plain["input_ids"][0][0] != bos
    with pytest.raises(ValueError, match="LlavaCollator"):
        processor(images=[make_image(0)], text=["<image> hi"], add_special_tokens=False, padding_side="right")
    left = processor(images=[make_image(0)], text=["<image> hi"], add_special_tokens=False, padding_side="left")
    assert left["input_ids"][0][0] == bos
