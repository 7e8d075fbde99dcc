# llava-hf serve --model PATH_OR_REPO [--port 8000 --max_batch_size 8 --allowed_image_hosts images.example.org]
"""An OpenAI-compatible HTTP server for a llava_hf checkpoint, with dynamic batching and a web chat page.

Endpoints:
    POST /v1/chat/completions   OpenAI chat completions: text and `image_url` content parts, streaming (SSE) or not
    GET  /v1/models             the one served model
    GET  /health                liveness plus queue length
    GET  /                      the web chat page (static/chat.html)

Written on the standard library's asyncio streams (HTTP/1.1 with keep-alive, Content-Length request bodies, chunked
SSE responses), so serving needs no extra dependency. Generation runs in one worker thread (`batching.py`); image
decoding and tokenization run in a small thread pool; the event loop only parses, routes and writes.

Safety: every limit answers with a 4xx JSON error in OpenAI's format that names the limit and the flag that raises it:
request bytes (413), header bytes (431), image bytes (413) and pixels (413, checked from the header before the pixels
are decoded, so a decompression bomb is never expanded), images per request, prompt tokens and output tokens (400),
request timeout (408), concurrent requests (429). Images come only as `data:` URLs, or as http(s) URLs whose host is
in --allowed_image_hosts (fetched without following redirects); local paths and file:// URLs are refused. With
--api_key_env NAME, /v1/* requires `Authorization: Bearer <value of $NAME>`. A failing request never ends the server.
"""

import asyncio
import base64
import binascii
import hmac
import io
import json
import os
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from transformers import HfArgumentParser

from llava_hf.processing import to_rgb
from llava_hf.serving.batching import BatchingEngine, GenerationJob
from llava_hf.serving.loading import ModelArguments, load_model_and_processor

STATIC_DIR = Path(__file__).parent / "static"
IMAGE_FORMATS = ["PNG", "JPEG", "WEBP", "GIF", "BMP"]
SUPPORTED_FIELDS = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "n",
    "user",
}
REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass
class ServeArguments:
    """Where to listen, how to batch, and the safety limits."""

    host: str = field(default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0 for all)."})
    port: int = field(default=8000, metadata={"help": "TCP port (0 picks a free one; the address is printed)."})
    served_model_name: str | None = field(
        default=None, metadata={"help": "Model id clients send and /v1/models lists (default: --model as given)."}
    )
    max_batch_size: int = field(default=8, metadata={"help": "Most requests per generate call (1 = one at a time)."})
    batch_wait_ms: float = field(
        default=10.0, metadata={"help": "How long the first request of a batch waits for others to join, in ms."}
    )
    max_concurrent_requests: int = field(
        default=64, metadata={"help": "Requests in flight (queued or generating) before new ones get 429."}
    )
    max_request_bytes: int = field(default=20 * 2**20, metadata={"help": "Largest request body accepted, in bytes."})
    max_image_bytes: int = field(default=10 * 2**20, metadata={"help": "Largest encoded image accepted, in bytes."})
    max_image_pixels: int = field(
        default=4096 * 4096, metadata={"help": "Largest image accepted, in pixels (width x height)."}
    )
    max_images_per_request: int = field(default=4, metadata={"help": "Most images in one request."})
    max_prompt_tokens: int = field(
        default=4096, metadata={"help": "Longest prompt accepted, in tokens (image tokens included)."}
    )
    max_output_tokens: int = field(default=1024, metadata={"help": "Largest max_tokens a request may ask for."})
    default_max_tokens: int | None = field(
        default=None,
        metadata={
            "help": "max_tokens for requests that do not set it (default: 256, or --max_output_tokens if lower)."
        },
    )
    request_timeout: float = field(
        default=120.0, metadata={"help": "Seconds a request may take end to end before it gets 408."}
    )
    allowed_image_hosts: list[str] = field(
        default_factory=list,
        metadata={"help": "Hosts whose http(s) image URLs may be fetched. Empty (default): remote URLs are refused."},
    )
    api_key_env: str | None = field(
        default=None, metadata={"help": "Environment variable holding the API key clients must send (default: none)."}
    )

    def __post_init__(self):
        if self.default_max_tokens is None:
            self.default_max_tokens = min(256, self.max_output_tokens)
        for name in (
            "max_batch_size",
            "max_concurrent_requests",
            "max_request_bytes",
            "max_image_bytes",
            "max_image_pixels",
            "max_prompt_tokens",
            "max_output_tokens",
            "default_max_tokens",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.max_images_per_request < 0 or self.request_timeout <= 0 or self.batch_wait_ms < 0:
            raise ValueError("--max_images_per_request and --batch_wait_ms must be >= 0, --request_timeout > 0.")
        if self.default_max_tokens > self.max_output_tokens:
            raise ValueError(
                f"--default_max_tokens {self.default_max_tokens} exceeds --max_output_tokens {self.max_output_tokens}."
            )
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ValueError(f"--api_key_env {self.api_key_env}: the environment variable is unset or empty.")


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


def parse_chat_request(
    body, settings: ServeArguments, model_name: str, control_tokens: tuple[str, ...] = ("<image>",)
) -> ChatRequest:
    """Validate an OpenAI chat-completions body; raise RequestError naming the bad field."""
    if not isinstance(body, dict):
        raise RequestError(400, "the request body must be a JSON object.")
    unknown = sorted(set(body) - SUPPORTED_FIELDS)
    if unknown:
        raise RequestError(
            400,
            f"unsupported field(s) {', '.join(unknown)}; this server accepts {', '.join(sorted(SUPPORTED_FIELDS))}.",
        )
    if body.get("model") not in (None, model_name):
        raise RequestError(404, f"model {body['model']!r} is not served here; use {model_name!r} (see /v1/models).")
    if body.get("n", 1) != 1:
        raise RequestError(400, "n must be 1: this server returns one choice per request.", "n")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = settings.default_max_tokens
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise RequestError(400, f"max_tokens must be a positive integer, got {max_tokens!r}.", "max_tokens")
    if max_tokens > settings.max_output_tokens:
        raise RequestError(
            400,
            f"max_tokens {max_tokens} exceeds this server's limit of {settings.max_output_tokens} "
            "(--max_output_tokens).",
            "max_tokens",
        )
    temperature = number(body, "temperature", 1.0, 0.0, 2.0)  # OpenAI's default is 1.0; send 0 for greedy
    top_p = number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0:
        raise RequestError(400, "top_p must be in (0, 1].", "top_p")
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not (isinstance(stop, list) and len(stop) <= 4 and all(isinstance(s, str) and s for s in stop)):
        raise RequestError(400, "stop must be a non-empty string or a list of up to 4 non-empty strings.", "stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(400, "stream must be true or false.", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(400, "stream_options accepts only include_usage.", "stream_options")
    messages, image_urls = convert_messages(body.get("messages"), control_tokens)
    if len(image_urls) > settings.max_images_per_request:
        raise RequestError(
            400,
            f"the request has {len(image_urls)} images; the limit is {settings.max_images_per_request} "
            "(--max_images_per_request).",
            "messages",
        )
    return ChatRequest(
        messages, image_urls, max_tokens, temperature, top_p, stop, stream, bool(options.get("include_usage"))
    )


def number(body: dict, name: str, default, low: float, high: float) -> float:
    value = body.get(name)
    value = default if value is None else value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError(400, f"{name} must be a number in [{low}, {high}], got {value!r}.", name)
    return float(value)


def convert_messages(messages, control_tokens: tuple[str, ...] = ("<image>",)) -> tuple[list[dict], list[str]]:
    """OpenAI messages -> transformers chat messages with `{"type": "image"}` parts, plus the image URLs in order.

    Image parts are moved to the front of their turn, where LLaVA saw images in training (LLAVA.md §3). Text that
    contains one of `control_tokens` (the tokenizer's special tokens) is refused: the rendered prompt is tokenized
    as a whole, so a client writing "</s>" or "<image>" would inject real control tokens.
    """
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "messages must be a non-empty list.", "messages")
    converted, image_urls = [], []
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RequestError(400, f"{where} must be an object with role and content.", "messages")
        role = {"developer": "system"}.get(message.get("role"), message.get("role"))
        if role not in ("system", "user", "assistant"):
            raise RequestError(
                400,
                f"{where}.role {message.get('role')!r} is not supported; use system, user or assistant.",
                "messages",
            )
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(parts, list):
            raise RequestError(400, f"{where}.content must be a string or a list of content parts.", "messages")
        texts, images = [], []
        for part_index, part in enumerate(parts):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                injected = next((token for token in control_tokens if token in part["text"]), None)
                if injected == "<image>":
                    raise RequestError(
                        400, f"{where} text contains '<image>'; send images as image_url parts instead.", "messages"
                    )
                if injected is not None:
                    raise RequestError(
                        400,
                        f"{where} text contains the control token {injected!r}; remove it from the text.",
                        "messages",
                    )
                texts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise RequestError(
                        400, f"{where}.content[{part_index}].image_url.url must be a string.", "messages"
                    )
                if role != "user":
                    raise RequestError(400, f"{where}: images are accepted in user messages only.", "messages")
                images.append({"type": "image"})
                image_urls.append(url)
            else:
                raise RequestError(
                    400,
                    f"{where}.content[{part_index}] must be {{'type': 'text', 'text': ...}} or "
                    f"{{'type': 'image_url', 'image_url': {{'url': ...}}}}.",
                    "messages",
                )
        converted.append({"role": role, "content": images + texts})
    if converted[-1]["role"] != "user":
        raise RequestError(400, "the last message must be from the user.", "messages")
    return converted, image_urls


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A redirect could lead an allowed host's URL to an internal address (server-side request forgery).
    def redirect_request(self, *args, **kwargs):
        return None


def image_bytes(url: str, settings: ServeArguments) -> bytes:
    """The encoded bytes of an image_url: a base64 `data:` URL, or an http(s) URL on an allowed host."""
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise RequestError(400, "a data: image URL must look like data:image/png;base64,<base64 data>.", "messages")
        media_type = header[len("data:") : -len(";base64")].lower()
        if not media_type.startswith("image/"):
            raise RequestError(415, f"data: URL media type {media_type!r} is not an image type.", "messages")
        if len(data) * 3 // 4 > settings.max_image_bytes:
            raise RequestError(413, image_too_big(len(data) * 3 // 4, settings), "messages")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as error:
            raise RequestError(400, f"the data: URL is not valid base64 ({error}).", "messages") from error
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https"):
        raise RequestError(
            400,
            "image_url must be a data: URL or an http(s) URL; local paths and file:// URLs are refused.",
            "messages",
        )
    if parsed.hostname not in settings.allowed_image_hosts:
        raise RequestError(
            400,
            f"remote image URLs are refused (host {parsed.hostname!r} is not allowed); send the image as a data: URL, "
            "or start the server with --allowed_image_hosts HOST.",
            "messages",
        )
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(url, timeout=10) as response:
            data = response.read(settings.max_image_bytes + 1)
    except OSError as error:
        raise RequestError(400, f"could not fetch image {url!r}: {error}", "messages") from error
    if len(data) > settings.max_image_bytes:
        raise RequestError(413, image_too_big(len(data), settings, at_least=True), "messages")
    return data


def image_too_big(size: int, settings: ServeArguments, at_least: bool = False) -> str:
    more = "more than " if at_least else ""
    return f"an image is {more}{size} bytes; the limit is {settings.max_image_bytes} (--max_image_bytes)."


def decode_image(data: bytes, settings: ServeArguments) -> Image.Image:
    """Decode to RGB, checking the pixel count from the header before any pixel is decompressed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
            width, height = image.size
            if width * height > settings.max_image_pixels:
                raise RequestError(
                    413,
                    f"an image is {width}x{height} = {width * height} pixels; the limit is {settings.max_image_pixels} "
                    "(--max_image_pixels).",
                    "messages",
                )
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise RequestError(413, f"image refused as a decompression bomb: {error}", "messages") from error
    except (OSError, SyntaxError, ValueError) as error:  # PIL reports corrupt files with all three
        raise RequestError(
            400, f"an image could not be decoded ({error}); send PNG, JPEG, WEBP, GIF or BMP.", "messages"
        ) from error
    return to_rgb(image)


class LlavaServer:
    """The HTTP front end: parses requests, enforces the limits, prepares inputs and hands them to the batcher."""

    def __init__(self, model, processor, settings: ServeArguments, model_name: str):
        self.model = model
        self.processor = processor
        tokenizer = processor.tokenizer
        self.control_tokens = tuple(
            sorted(
                {
                    processor.image_token,
                    *tokenizer.all_special_tokens,
                    *(t.content for t in tokenizer.added_tokens_decoder.values() if t.special),
                }
            )
        )
        self.settings = settings
        self.model_name = model_name
        self.context_length = model.config.get_text_config().max_position_embeddings
        self.engine = BatchingEngine(model, processor.tokenizer, settings.max_batch_size, settings.batch_wait_ms / 1000)
        self.api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self.prepare_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llava-hf-prepare")
        self.processor_lock = threading.Lock()  # one processor call at a time: the Rust tokenizer is not re-entrant
        self.in_flight = 0
        self.connections: set[asyncio.Task] = set()  # open keep-alive connections, cancelled at shutdown
        self.created = int(time.time())
        self.page = (STATIC_DIR / "chat.html").read_bytes()
        self.address: tuple[str, int] | None = None  # (host, port) once listening

    # ---- lifecycle ----------------------------------------------------------------------------------------------

    async def start(self) -> asyncio.Server:
        """Start the batcher and listen; returns the asyncio server (its sockets give the bound port)."""
        self.engine.start()
        # `limit` caps one header block: readuntil raises LimitOverrunError beyond it, answered with 431.
        return await asyncio.start_server(self.handle_connection, self.settings.host, self.settings.port, limit=65536)

    def close(self):
        self.engine.stop()
        self.prepare_pool.shutdown(wait=False, cancel_futures=True)

    # ---- HTTP/1.1 -----------------------------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.connections.add(asyncio.current_task())
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
                except (asyncio.IncompleteReadError, TimeoutError):
                    return  # the client closed the connection, or idled past keep-alive
                except asyncio.LimitOverrunError:
                    await self.send_error(writer, RequestError(431, "request headers exceed 64 KiB."), keep_alive=False)
                    return
                try:
                    method, path, headers = parse_head(head)
                    body = await self.read_body(reader, headers)
                except RequestError as error:
                    await self.send_error(writer, error, keep_alive=False)  # the rest of the stream is unreadable
                    return
                keep_alive = headers.get("connection", "").lower() != "close"
                keep_alive = await self.route(method, path, headers, body, writer) and keep_alive
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.connections.discard(asyncio.current_task())
            writer.close()

    async def read_body(self, reader, headers: dict) -> bytes:
        if "transfer-encoding" in headers:
            raise RequestError(411, "chunked request bodies are not accepted; send a Content-Length.")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError as error:
            raise RequestError(400, "Content-Length must be an integer.") from error
        if length < 0:
            raise RequestError(400, "Content-Length must be >= 0.")
        if length > self.settings.max_request_bytes:
            raise RequestError(
                413,
                f"the request body is {length} bytes; the limit is {self.settings.max_request_bytes} "
                "(--max_request_bytes).",
            )
        try:
            return await asyncio.wait_for(reader.readexactly(length), timeout=60)
        except (asyncio.IncompleteReadError, TimeoutError) as error:
            raise RequestError(400, "the request body ended before Content-Length bytes arrived.") from error

    async def route(self, method: str, path: str, headers: dict, body: bytes, writer) -> bool:
        """Answer one request; returns whether the connection can be kept open."""
        path = path.split("?", 1)[0]
        routes = {
            "/": ("GET", self.page_response),
            "/health": ("GET", self.health),
            "/v1/models": ("GET", self.models),
            "/v1/chat/completions": ("POST", self.chat_completions),
        }
        try:
            if path not in routes:
                raise RequestError(
                    404, f"no route {path}; see / (web page), /health, /v1/models, /v1/chat/completions."
                )
            expected, handler = routes[path]
            if method != expected:
                raise RequestError(405, f"{path} accepts {expected} only.", headers={"Allow": expected})
            if path.startswith("/v1/"):
                self.check_api_key(headers)
            return await handler(headers, body, writer)
        except RequestError as error:
            return await self.send_error(writer, error)
        except Exception as error:  # a bug must cost one request, never the server
            print(f"llava-hf serve: internal error on {method} {path}: {error!r}", file=sys.stderr, flush=True)
            return await self.send_error(writer, RequestError(500, f"internal error: {type(error).__name__}"))

    def check_api_key(self, headers: dict):
        if self.api_key is None:
            return
        sent = headers.get("authorization", "")
        if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), self.api_key.encode())):
            raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")

    async def send(self, writer, status: int, body: bytes, content_type: str, headers: dict | None = None) -> bool:
        lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", f"Content-Type: {content_type}"]
        lines += [f"Content-Length: {len(body)}", "Cache-Control: no-store"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        return True

    async def send_json(self, writer, payload: dict, status: int = 200, headers: dict | None = None) -> bool:
        return await self.send(writer, status, json.dumps(payload).encode(), "application/json", headers)

    async def send_error(self, writer, error: RequestError, keep_alive: bool = True) -> bool:
        headers = dict(error.headers)
        if not keep_alive:
            headers["Connection"] = "close"
        try:
            await self.send_json(writer, error.body(), error.status, headers)
        except ConnectionError:
            return False
        return keep_alive

    # ---- endpoints ----------------------------------------------------------------------------------------------

    async def page_response(self, headers, body, writer) -> bool:
        return await self.send(writer, 200, self.page, "text/html; charset=utf-8")

    async def health(self, headers, body, writer) -> bool:
        status = {"status": "ok", "model": self.model_name, "in_flight": self.in_flight, "queued": self.engine.queued}
        status["batches_run"] = self.engine.batches_run
        status["largest_recent_batch"] = max(self.engine.recent_batch_sizes, default=0)
        return await self.send_json(writer, status)

    async def models(self, headers, body, writer) -> bool:
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "llava_hf"}
        return await self.send_json(writer, {"object": "list", "data": [model]})

    async def chat_completions(self, headers, body, writer) -> bool:
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}.")
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RequestError(400, f"the body is not valid JSON: {error}.") from error
        request = parse_chat_request(payload, self.settings, self.model_name, self.control_tokens)
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise RequestError(
                429,
                f"the server is at its limit of {self.settings.max_concurrent_requests} concurrent requests "
                "(--max_concurrent_requests); retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        job = None
        try:
            deadline = time.monotonic() + self.settings.request_timeout
            loop = asyncio.get_running_loop()
            prepared = loop.run_in_executor(self.prepare_pool, self.prepare, request)
            input_ids, pixel_values = await self.before(deadline, prepared)
            events: asyncio.Queue = asyncio.Queue()
            job = GenerationJob(
                input_ids=input_ids,
                pixel_values=pixel_values,
                max_new_tokens=request.max_tokens,
                emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
                temperature=request.temperature,
                top_p=request.top_p,
                stop=request.stop,
            )
            try:
                self.engine.submit(job)
            except RuntimeError as error:
                raise RequestError(503, str(error)) from error
            completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            if request.stream:
                return await self.stream(writer, request, job, events, deadline, completion_id)
            while (event := await self.before(deadline, events.get()))["type"] == "delta":
                pass
            if event["type"] == "error":
                raise RequestError(500, event["message"])
            usage = usage_of(job, event)
            message = {"role": "assistant", "content": event["text"]}
            choice = {"index": 0, "message": message, "finish_reason": event["finish_reason"], "logprobs": None}
            return await self.send_json(writer, self.completion(completion_id, "chat.completion", [choice], usage))
        finally:
            self.in_flight -= 1
            if job is not None:
                job.cancelled.set()  # no-op when finished; otherwise frees its batch row at the next step

    async def before(self, deadline: float, awaitable):
        """Await `awaitable` until the request's deadline; past it, 408."""
        try:
            return await asyncio.wait_for(awaitable, timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError as error:
            raise RequestError(
                408, f"the request did not finish within {self.settings.request_timeout} s (--request_timeout)."
            ) from error

    def prepare(self, request: ChatRequest):
        """Fetch and decode the images, render the chat template and tokenize: `(input_ids [T], pixel_values)`.

        Runs in the prepare pool, off the event loop.
        """
        images = [decode_image(image_bytes(url, self.settings), self.settings) for url in request.image_urls]
        with self.processor_lock:
            try:
                text = self.processor.apply_chat_template(request.messages, add_generation_prompt=True, tokenize=False)
                inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
            except ValueError as error:  # e.g. a template that refuses the role order
                raise RequestError(400, f"the conversation cannot be encoded: {error}", "messages") from error
        prompt_tokens = inputs["input_ids"].shape[1]
        if prompt_tokens > self.settings.max_prompt_tokens:
            raise RequestError(
                400,
                f"the prompt is {prompt_tokens} tokens (images included); the limit is "
                f"{self.settings.max_prompt_tokens} (--max_prompt_tokens).",
                "messages",
            )
        if prompt_tokens + request.max_tokens > self.context_length:
            raise RequestError(
                400,
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) exceeds the model's "
                f"context of {self.context_length} tokens; shorten the conversation or lower max_tokens.",
                "max_tokens",
            )
        return inputs["input_ids"][0], inputs.get("pixel_values")

    def completion(self, completion_id: str, kind: str, choices: list, usage: dict | None = None) -> dict:
        payload = {"id": completion_id, "object": kind, "created": int(time.time()), "model": self.model_name}
        payload["choices"] = choices
        if usage is not None:
            payload["usage"] = usage
        return payload

    async def stream(self, writer, request: ChatRequest, job, events, deadline: float, completion_id: str) -> bool:
        """Server-sent events, one `chat.completion.chunk` per text delta, chunked transfer encoding, then [DONE]."""
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
        writer.write((head + "Transfer-Encoding: chunked\r\n\r\n").encode())

        async def send_event(payload) -> None:
            data = f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()
            writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await writer.drain()

        def chunk(delta: dict, finish_reason=None) -> dict:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return self.completion(completion_id, "chat.completion.chunk", [choice])

        try:
            await send_event(chunk({"role": "assistant", "content": ""}))
            while True:
                try:
                    event = await self.before(deadline, events.get())
                except RequestError as error:  # the status line is gone; report the timeout in the stream
                    await send_event(error.body())
                    break
                if event["type"] == "delta":
                    await send_event(chunk({"content": event["text"]}))
                    continue
                if event["type"] == "error":
                    await send_event(RequestError(500, event["message"]).body())
                    break
                await send_event(chunk({}, event["finish_reason"]))
                if request.include_usage:
                    await send_event(self.completion(completion_id, "chat.completion.chunk", [], usage_of(job, event)))
                await send_event("[DONE]")
                break
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            return False  # the client left; the finally in chat_completions cancels its row
        return True


def usage_of(job: GenerationJob, event: dict) -> dict:
    prompt_tokens = len(job.input_ids)
    completion_tokens = event["completion_tokens"]
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def parse_head(head: bytes) -> tuple[str, str, dict]:
    """Request line and headers of one HTTP/1.1 request (header names lower-cased)."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError as error:
        raise RequestError(400, "malformed HTTP request line.") from error
    if not version.startswith("HTTP/1."):
        raise RequestError(400, f"unsupported protocol {version!r}; speak HTTP/1.1.")
    headers = {}
    for line in lines[1:]:
        if line:
            name, colon, value = line.partition(":")
            if not colon:
                raise RequestError(400, f"malformed header line {line[:40]!r}.")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def serve(server: LlavaServer, ready: threading.Event | None = None, stop: asyncio.Event | None = None):
    """Run until `stop` is set (or forever); print the address once listening."""
    listener = await server.start()
    host, port = listener.sockets[0].getsockname()[:2]
    server.address = (host, port)
    print(f"llava-hf serve: {server.model_name} on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)")
    sys.stdout.flush()
    if ready is not None:
        ready.set()
    try:
        async with listener:
            if stop is None:
                await listener.serve_forever()
            else:
                await stop.wait()
    finally:
        listener.close()
        for task in list(server.connections):
            task.cancel()
        await asyncio.gather(*server.connections, return_exceptions=True)
        server.close()


class ServerThread:
    """Run a LlavaServer in a background thread (tests, benchmarks, notebooks): `with ServerThread(...) as base_url`."""

    def __init__(self, model, processor, settings: ServeArguments, model_name: str = "llava"):
        self.server = LlavaServer(model, processor, settings, model_name)
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.stop_event: asyncio.Event | None = None
        self.thread = threading.Thread(target=self._run, name="llava-hf-server", daemon=True)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.stop_event = asyncio.Event()
        self.loop.run_until_complete(serve(self.server, self.ready, self.stop_event))

    def __enter__(self) -> str:
        self.thread.start()
        if not self.ready.wait(timeout=30):
            raise RuntimeError("the server did not start within 30 s")
        host, port = self.server.address
        return f"http://{host}:{port}"

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser((ModelArguments, ServeArguments))
    parser.prog = "llava-hf serve"
    try:
        model_args, settings = parser.parse_args_into_dataclasses(args=argv)
        model, processor = load_model_and_processor(model_args)
    except ValueError as error:
        print(f"llava-hf serve: error: {error}", file=sys.stderr)
        return 2
    server = LlavaServer(model, processor, settings, settings.served_model_name or model_args.model)
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
