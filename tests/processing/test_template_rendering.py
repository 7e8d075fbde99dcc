"""The Python renderings of `vicuna_v1` and `plain` give exactly transformers' Jinja rendering: the same text and
the same generation spans for every conversation of a varied corpus; anything else goes through Jinja."""

import random

import pytest
from transformers.utils.chat_template_utils import render_jinja_template

from llava_hf import CHAT_TEMPLATE_NAMES, get_chat_template
from llava_hf.processing.template_rendering import python_renderer, render_with_answer_spans

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
TEXTS = [
    "",
    " ",
    "What is this?",
    "A red square.\nAnd a blue one.",
    "  spaced  ",
    "<image>",
    "x <image> y",
    "日本語 ok",
]


def random_content(rng: random.Random, allow_string: bool = True):
    if allow_string and rng.random() < 0.3:
        return rng.choice(TEXTS)
    parts = []
    for _ in range(rng.randint(0, 4)):
        kind = rng.choice(["text", "text", "image", "image_url", "video"])
        parts.append({"type": kind, "text": rng.choice(TEXTS)} if kind == "text" else {"type": kind})
    return parts


def corpus(size: int = 300) -> list[list[dict]]:
    """System messages (string, parts, empty) or none, 1-4 rounds, images anywhere, answers ending or not the
    conversation; the kinds of conversation the data formats produce and a few they do not."""
    rng = random.Random(0)
    conversations = []
    for _ in range(size):
        messages = []
        if rng.random() < 0.3:
            messages.append({"role": "system", "content": random_content(rng)})
        for _ in range(rng.randint(1, 4)):
            messages.append({"role": "user", "content": random_content(rng)})
            if rng.random() < 0.9:
                messages.append({"role": "assistant", "content": random_content(rng)})
        conversations.append(messages)
    return conversations


@pytest.mark.parametrize("name", ["vicuna_v1", "plain"])
def test_python_rendering_is_jinja_rendering(name):
    template = get_chat_template(name)
    render = python_renderer(template)
    conversations = corpus()
    texts, spans = render_jinja_template(
        conversations=conversations, chat_template=template, return_assistant_tokens_mask=True, **SPECIAL_TOKENS
    )
    for conversation, text, answer_spans in zip(conversations, texts, spans):  # the Python function itself
        assert render(conversation, SPECIAL_TOKENS["eos_token"]) == (text, answer_spans), conversation
    assert render_with_answer_spans(conversations, template, SPECIAL_TOKENS) == (texts, spans)


def test_other_templates_and_edited_copies_take_jinja():
    for name in set(CHAT_TEMPLATE_NAMES) - {"vicuna_v1", "plain"}:
        assert python_renderer(get_chat_template(name)) is None
    edited = get_chat_template("vicuna_v1").replace("USER: ", "User: ")
    assert python_renderer(edited) is None
    conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    text, spans = render_with_answer_spans([conversation], edited, SPECIAL_TOKENS)
    assert "User: Hi" in text[0] and [text[0][start:end] for start, end in spans[0]] == [" Hello</s>"]


def test_conversations_outside_the_python_rendering_go_to_jinja():
    """Content Jinja reads differently (non-string text) renders as Jinja renders it, and a role the template
    refuses raises the template's own error."""
    template = get_chat_template("vicuna_v1")
    odd = [{"role": "user", "content": [{"type": "text", "text": 7}]}, {"role": "assistant", "content": "ok"}]
    expected = render_jinja_template(
        conversations=[odd], chat_template=template, return_assistant_tokens_mask=True, **SPECIAL_TOKENS
    )
    assert render_with_answer_spans([odd], template, SPECIAL_TOKENS) == expected
    with pytest.raises(Exception, match="vicuna_v1 accepts a leading system message"):
        render_with_answer_spans([[{"role": "tool", "content": "x"}]], template, SPECIAL_TOKENS)
