"""Every LLaVA conversation template renders the exact strings of the original `llava/conversation.py`, and its generation markers select
exactly the supervised tokens (the original `llava/train/train.py` `preprocess_v1` and `llava/mm_utils.py` `tokenizer_image_token`) through transformers' `return_assistant_tokens_mask`."""

import pytest
import torch

from llava_hf import CHAT_TEMPLATE_NAMES, get_chat_template
from llava_hf.testing import TINY_IMAGE_TOKENS, make_image, make_tiny_processor

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions."
)
LLAMA_2_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual content that the user "
    "provides, and assist the user with a variety of tasks using natural language."
)
Q1, A1, Q2, A2 = "What is in the picture?", "A red square.", "Where is it?", "At the top left."

CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": Q1}]},
    {"role": "assistant", "content": [{"type": "text", "text": A1}]},
    {"role": "user", "content": Q2},
    {"role": "assistant", "content": A2},
]

# The the original `llava/conversation.py` strings exactly; the tokenizer adds BOS when tokenizing, as the original did.
EXPECTED = {
    "vicuna_v1": f"{VICUNA_SYSTEM} USER: <image>\n{Q1} ASSISTANT: {A1}</s>USER: {Q2} ASSISTANT: {A2}</s>",
    "llava_v1": f"{LLAVA_V1_SYSTEM} USER: <image>\n{Q1} ASSISTANT: {A1}</s>USER: {Q2} ASSISTANT: {A2}</s>",
    "llava_llama_2": f"[INST] <<SYS>>\n{LLAMA_2_SYSTEM}\n<</SYS>>\n\n<image>\n{Q1} [/INST] {A1} </s><s>[INST] {Q2} [/INST] {A2} </s>",
    "mistral_instruct": f"[INST] <image>\n{Q1} [/INST] {A1} </s>[INST] {Q2} [/INST] {A2} </s>",
    "chatml_direct": (
        f"<|im_start|>system\nAnswer the questions.<|im_end|><|im_start|>user\n<image>\n{Q1}<|im_end|>"
        f"<|im_start|>assistant\n{A1}<|im_end|><|im_start|>user\n{Q2}<|im_end|><|im_start|>assistant\n{A2}<|im_end|>"
    ),
    "plain": f"<image>{A1}\n{A2}\n",
}
GENERATION_PROMPT_ENDS = {
    "vicuna_v1": f"USER: {Q2} ASSISTANT:",
    "llava_v1": f"USER: {Q2} ASSISTANT:",
    "llava_llama_2": f"[INST] {Q2} [/INST]",
    "mistral_instruct": f"[INST] {Q2} [/INST]",
    "chatml_direct": f"<|im_start|>user\n{Q2}<|im_end|><|im_start|>assistant\n",
    "plain": "<image>",
}
# What each template supervises: the answers with their end tokens (plain: the caption and its "\n").
SUPERVISED = {
    "vicuna_v1": f" {A1}</s> {A2}</s>",
    "llava_v1": f" {A1}</s> {A2}</s>",
    "llava_llama_2": f" {A1} </s> {A2} </s>",
    "mistral_instruct": f" {A1} </s> {A2} </s>",
    "chatml_direct": f"{A1}<|im_end|>{A2}<|im_end|>",
    "plain": f"{A1}\n{A2}\n",
}


def test_all_six_templates_ship():
    assert set(CHAT_TEMPLATE_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_template_renders_llava_strings_exactly(tokenizer, name):
    processor = make_tiny_processor(tokenizer, chat_template=name)
    assert processor.apply_chat_template(CONVERSATION) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_generation_prompt(tokenizer, name):
    processor = make_tiny_processor(tokenizer, chat_template=name)
    turns = CONVERSATION[:1] if name == "plain" else CONVERSATION[:3]  # plain is single-turn captioning
    prompt = processor.apply_chat_template(turns, add_generation_prompt=True)
    assert prompt.endswith(GENERATION_PROMPT_ENDS[name])
    # the prompt followed by what the model should generate is exactly the full conversation (plain drops turns)
    if name != "plain":
        second_answer = {
            "chatml_direct": f"{A2}<|im_end|>",
            "llava_llama_2": f" {A2} </s>",
            "mistral_instruct": f" {A2} </s>",
        }
        assert prompt + second_answer.get(name, f" {A2}</s>") == EXPECTED[name]


def test_custom_system_message(tokenizer):
    processor = make_tiny_processor(tokenizer)
    rendered = processor.apply_chat_template([{"role": "system", "content": "Be brief."}] + CONVERSATION[:1])
    assert rendered == f"Be brief. USER: <image>\n{Q1} "


def test_unknown_template_name_lists_the_choices(tokenizer):
    with pytest.raises(ValueError, match="vicuna_v1"):
        get_chat_template("vicuna_v2")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_assistant_mask_selects_exactly_answers_and_end_tokens(tokenizer, name):
    processor = make_tiny_processor(tokenizer, chat_template=name)
    conversation = [dict(message) for message in CONVERSATION]
    conversation[0] = {
        "role": "user",
        "content": [{"type": "image", "image": make_image(1)}, {"type": "text", "text": Q1}],
    }
    encoded = processor.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, return_tensors="pt"
    )
    input_ids, mask = encoded["input_ids"][0], torch.as_tensor(encoded["assistant_masks"][0]).bool()
    assert (input_ids == tokenizer.image_token_id).sum() == TINY_IMAGE_TOKENS
    assert not mask[input_ids == tokenizer.image_token_id].any()
    assert not mask[0]  # BOS
    assert tokenizer.decode(input_ids[mask]) == SUPERVISED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rendered_text_and_tokenized_template_agree_with_one_bos(tokenizer, name):
    processor = make_tiny_processor(tokenizer, chat_template=name)
    image = make_image(1)
    conversation = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": Q1}]}]
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=True)
    from_text = processor(images=image, text=rendered, return_tensors="pt")["input_ids"][0]
    from_template = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt")["input_ids"][0]
    assert torch.equal(from_text, from_template)
    assert from_text[0] == tokenizer.bos_token_id and from_text[1] != tokenizer.bos_token_id
