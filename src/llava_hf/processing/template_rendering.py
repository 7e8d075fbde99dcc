"""Rendering conversations with their answer spans, as transformers' Jinja rendering does, in Python for the two
templates training uses by default.

The preflight check renders every row of the training data once (665k rows for the LLaVA-1.5 mix) to measure its
length and find its supervised span. transformers' `render_jinja_template` costs ~0.1 ms per conversation, most of it
converting each conversation to plain data and running the sandboxed template with its generation tracker; that is
a fifth of the check. `vicuna_v1` (stage 2) and `plain` (stage 1) are also written here as Python functions that
return the same text and the same `(start, end)` character spans of each `{% generation %}` block, ~10x faster.

Which path a template takes is decided by its source: exactly the shipped `.jinja` source takes the Python path,
anything else (another template, an edited copy) takes Jinja. A conversation the Python functions do not cover in
the template's own terms (a role the template refuses, content that is neither a string nor a list of parts, text
that is not a string) sends the whole batch to Jinja, which then renders it or raises its own error. A test renders
a corpus of conversations both ways and requires identical text and spans.
"""

import functools

from .processing_llava import get_chat_template


class _NotCovered(Exception):
    """A conversation whose rendering the Python functions leave to Jinja."""


VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, "
    "and polite answers to the user's questions."
)


def _content_text(content, image_text: str) -> str:
    """A message's content as the templates' `render` macro writes it: a string as it is; in a list of parts each
    image (`image` or `image_url`) becomes `image_text`, each text part its text, any other part nothing."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _NotCovered
    pieces = []
    for part in content:
        if not isinstance(part, dict):
            raise _NotCovered
        kind = part.get("type")
        if kind in ("image", "image_url"):
            pieces.append(image_text)
        elif kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise _NotCovered
            pieces.append(text)
    return "".join(pieces)


def _role(message) -> str:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise _NotCovered
    return message["role"]


def _render_vicuna_v1(messages: list[dict], eos_token: str | None) -> tuple[str, list[tuple[int, int]]]:
    """`{system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: ...`; each span is `' ' + answer + eos_token`."""
    if not messages or eos_token is None:
        raise _NotCovered
    if _role(messages[0]) == "system":
        system, turns = _content_text(messages[0].get("content"), "<image>\n"), messages[1:]
    else:
        system, turns = VICUNA_V1_SYSTEM, messages
    pieces = [system + " "] if system else []
    length = len(pieces[0]) if pieces else 0
    spans = []
    for message in turns:
        role = _role(message)
        if role == "user":
            piece = "USER: " + _content_text(message.get("content"), "<image>\n") + " "
        elif role == "assistant":
            answer = " " + _content_text(message.get("content"), "<image>\n") + eos_token
            piece = "ASSISTANT:" + answer
            spans.append((length + len("ASSISTANT:"), length + len(piece)))
        else:
            raise _NotCovered  # the template raises its own error for this role
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces), spans


def _render_plain(messages: list[dict], eos_token: str | None) -> tuple[str, list[tuple[int, int]]]:
    """`<image>{caption}\\n`: a user turn keeps only its images, each answer and its `\\n` is a span; other roles are
    not written."""
    pieces, spans, length = [], [], 0
    for message in messages:
        role, content = _role(message), message.get("content")
        if role == "user":
            if isinstance(content, str):
                images = content.count("<image>")
            else:
                _content_text(content, "")  # the parts as the template reads them, or Jinja
                images = sum(part.get("type") in ("image", "image_url") for part in content)
            piece = "<image>" * images
        elif role == "assistant":  # of a list of parts only the text is written
            piece = (content if isinstance(content, str) else _content_text(content, "")) + "\n"
            spans.append((length, length + len(piece)))
        else:
            continue
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces), spans


_PYTHON_RENDERERS = {"vicuna_v1": _render_vicuna_v1, "plain": _render_plain}


@functools.cache
def _renderers_by_source() -> dict:
    return {get_chat_template(name): render for name, render in _PYTHON_RENDERERS.items()}


def python_renderer(chat_template: str):
    """The Python function rendering exactly this template source, or None when it must go through Jinja."""
    return _renderers_by_source().get(chat_template)


def render_with_answer_spans(
    conversations: list[list[dict]], chat_template: str, special_tokens: dict[str, str]
) -> tuple[list[str], list[list[tuple[int, int]]]]:
    """Each conversation rendered with `chat_template`, and the `(start, end)` character spans of its generation
    blocks: what `render_jinja_template(..., return_assistant_tokens_mask=True, **special_tokens)` returns.
    `special_tokens`: the tokenizer's `special_tokens_map` (the templates read `eos_token`)."""
    render = python_renderer(chat_template)
    if render is not None:
        try:
            rendered = [render(messages, special_tokens.get("eos_token")) for messages in conversations]
            return [text for text, _ in rendered], [spans for _, spans in rendered]
        except _NotCovered:
            pass
    from transformers.utils.chat_template_utils import render_jinja_template

    return render_jinja_template(
        conversations=conversations,
        chat_template=chat_template,
        return_assistant_tokens_mask=True,
        **special_tokens,
    )


__all__ = ["VICUNA_V1_SYSTEM", "python_renderer", "render_with_answer_spans"]
