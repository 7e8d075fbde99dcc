"""The OpenAI chat-completions protocol as `llava-hf serve` speaks it: request models, validation, error and reply bodies.

A request body goes through three checks, cheapest first, each before the step it protects:
1. `ChatCompletionRequest.model_validate_json`: pydantic's JSON parser (nesting depth and number size are bounded,
   so a 100,000-level array or a 5,000-digit integer is a parse error, not a crash) and the field types.
2. `parse_chat_request`: the server's limits that need no model (max_tokens, content parts and total text length
   against what --max_prompt_tokens can hold, images per request), then conversion to transformers' chat format.
3. `find_injected_token`, on the prompt as the chat template renders it (done by the server, which holds the
   template): client text must not create a tokenizer control token there, even split across content parts
   ("hi </" + "s>") that the template joins.
Field names and semantics follow https://platform.openai.com/docs/api-reference/chat/create.
"""

import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class RequestError(Exception):
    """A request the server refuses: HTTP status plus an OpenAI-style error message."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error"}.get(
            self.status, "invalid_request_error" if self.status < 500 else "server_error"
        )
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.status}}


# ---- request models -------------------------------------------------------------------------------------------------
# strict: JSON types are not coerced ("5" is not an int, 1.5 is not a max_tokens); extra="forbid": an unknown field is
# an error rather than silently ignored (OpenAI clients add fields such as `tools` that this server cannot honour).


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(Strict):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str
    detail: Literal["auto", "low", "high"] | None = None  # accepted and ignored: LLaVA sees one fixed resolution


class ImagePart(Strict):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart]
    name: str | None = None


class StreamOptions(Strict):
    include_usage: bool = False


class ChatCompletionRequest(Strict):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)  # OpenAI's default is 1.0; send 0 for greedy
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[Annotated[str, Field(min_length=1)]] | None = Field(default=None, max_length=4)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    user: str | None = None


SUPPORTED_FIELDS = sorted(ChatCompletionRequest.model_fields)


def validation_message(error: ValidationError) -> str:
    """One readable line for a pydantic error: the unknown fields, or the first problem with its place."""
    problems = error.errors(include_url=False)
    unknown = sorted({str(problem["loc"][0]) for problem in problems if problem["type"] == "extra_forbidden"})
    if unknown and all(len(problem["loc"]) == 1 for problem in problems if problem["type"] == "extra_forbidden"):
        return f"unsupported field(s) {', '.join(unknown)}; this server accepts {', '.join(SUPPORTED_FIELDS)}."
    if problems[0]["type"] == "json_invalid":
        return f"the body is not valid JSON: {problems[0]['ctx']['error']}."
    if problems[0]["type"] == "model_type" and not problems[0]["loc"]:
        return "the request body must be a JSON object."
    # Unions report one error per branch; the deepest one names what the client most likely meant.
    problem = max(problems, key=lambda problem: len(problem["loc"]))
    where = place(problem["loc"])
    value = problem.get("input")
    shown = f", got {value!r}" if isinstance(value, (str, int, float)) and len(repr(value)) <= 40 else ""
    return f"{where or 'body'}: {problem['msg']}{shown}."


def place(loc: tuple) -> str:
    """`messages[0].content[1].image_url` from pydantic's error location, without its union-branch labels."""
    parts, skip_tag = [], False
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif "tagged-union[" in item:
            skip_tag = True  # the discriminator's value follows (after the list index, if any): not a field name
        elif "[" in item or item in ("str", "int", "float", "list"):
            continue
        elif skip_tag:
            skip_tag = False
        else:
            parts.append(f".{item}")
    return "".join(parts).lstrip(".")


# ---- validated request -------------------------------------------------------------------------------------------


@dataclass
class ChatRequest:
    """A validated chat-completions request. `messages` are in transformers' chat format; `image_urls` in order."""

    messages: list[dict]
    image_urls: list[str]
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    stream: bool
    include_usage: bool


def parse_chat_request(body: bytes, limits, model_name: str, max_text_chars: int) -> ChatRequest:
    """Validate a chat-completions body against the protocol and the server's limits; raise RequestError if bad.

    `limits` is the server's ServeArguments; `max_text_chars` bounds the text of all messages together (the longest
    text that --max_prompt_tokens can hold), so an oversized prompt is refused before anything is tokenized.
    """
    try:
        request = ChatCompletionRequest.model_validate_json(body)
    except ValidationError as error:
        raise RequestError(400, validation_message(error)) from error
    if request.model not in (None, model_name):
        raise RequestError(404, f"model {request.model!r} is not served here; use {model_name!r} (see /v1/models).")
    max_tokens = request.max_completion_tokens or request.max_tokens or limits.default_max_tokens
    if max_tokens > limits.max_output_tokens:
        raise RequestError(
            400,
            f"max_tokens {max_tokens} exceeds this server's limit of {limits.max_output_tokens} (--max_output_tokens).",
            "max_tokens",
        )
    parts = sum(1 if isinstance(message.content, str) else max(len(message.content), 1) for message in request.messages)
    if parts > limits.max_prompt_tokens:  # the template's work grows with them, even with no text in them
        raise RequestError(
            400,
            f"the messages have {parts} content parts; at most {limits.max_prompt_tokens} fit the prompt "
            "(--max_prompt_tokens).",
            "messages",
        )
    text_chars = sum(len(text) for message in request.messages for text in texts_of(message))
    if text_chars > max_text_chars:
        raise RequestError(
            400,
            f"the messages hold {text_chars} characters of text, more than the {max_text_chars} that "
            f"{limits.max_prompt_tokens} prompt tokens can hold (--max_prompt_tokens).",
            "messages",
        )
    messages, image_urls = convert_messages(request.messages)
    if len(image_urls) > limits.max_images_per_request:
        raise RequestError(
            400,
            f"the request has {len(image_urls)} images; the limit is {limits.max_images_per_request} "
            "(--max_images_per_request).",
            "messages",
        )
    stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
    include_usage = request.stream_options is not None and request.stream_options.include_usage
    return ChatRequest(
        messages, image_urls, max_tokens, request.temperature, request.top_p, stop, request.stream, include_usage
    )


def texts_of(message: Message) -> list[str]:
    if isinstance(message.content, str):
        return [message.content]
    return [part.text for part in message.content if isinstance(part, TextPart)]


def convert_messages(messages: list[Message]) -> tuple[list[dict], list[str]]:
    """OpenAI messages -> transformers chat messages with `{"type": "image"}` parts, plus the image URLs in order.

    Image parts are moved to the front of their turn, where LLaVA saw images in training (the original repository's
    instruction data writes "<image>\n" before the question).
    """
    converted, image_urls = [], []
    for index, message in enumerate(messages):
        role = "system" if message.role == "developer" else message.role
        parts = [TextPart(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        images = [part.image_url.url for part in parts if isinstance(part, ImagePart)]
        if images and role != "user":
            raise RequestError(400, f"messages[{index}]: images are accepted in user messages only.", "messages")
        image_urls += images
        texts = [{"type": "text", "text": part.text} for part in parts if isinstance(part, TextPart)]
        converted.append({"role": role, "content": [{"type": "image"} for _ in images] + texts})
    if converted[-1]["role"] != "user":
        raise RequestError(400, "the last message must be from the user.", "messages")
    return converted, image_urls


def without_text(messages: list[dict]) -> list[dict]:
    """`messages` with every text emptied: rendered, the template's own text only."""
    return [
        {
            **message,
            "content": [{**part, "text": ""} if part["type"] == "text" else part for part in message["content"]],
        }
        for message in messages
    ]


def find_injected_token(prompt: str, skeleton: str, control_tokens: tuple[str, ...]) -> str | None:
    """The first control token that client text adds to the rendered prompt, or None.

    `prompt` is the rendered conversation, `skeleton` the same rendered `without_text`. The prompt is tokenized as a
    whole, so any control-token string in it becomes the real token (a client writing "</s>" would end its turn and
    speak as the assistant). Checking each text part is not enough: the template joins parts, and "hi </" + "s>"
    renders as "</s>". So each control token must occur as often in the prompt as in the skeleton.
    """
    return next((token for token in control_tokens if prompt.count(token) > skeleton.count(token)), None)


# ---- reply bodies ----------------------------------------------------------------------------------------------------


def completion_body(completion_id: str, kind: str, model_name: str, choices: list, usage: dict | None = None) -> dict:
    """A `chat.completion` or `chat.completion.chunk` object."""
    body = {"id": completion_id, "object": kind, "created": int(time.time()), "model": model_name, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return body


def usage_body(prompt_tokens: int, completion_tokens: int) -> dict:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}
