# llava-hf serve --model PATH_OR_REPO [--port 8000 --max_batch_size 8 --allowed_image_hosts images.example.org]
"""An OpenAI-compatible HTTP server for a llava_hf checkpoint, with dynamic batching and a web chat page.

Endpoints:
    POST /v1/chat/completions   OpenAI chat completions: text and `image_url` content parts, streaming (SSE) or not
    GET  /v1/models             the one served model
    GET  /health                liveness, requests in flight, batching counters
    GET  /                      the web chat page (static/chat.html)

HTTP is FastAPI on uvicorn (the `serve` extra), like transformers' own `transformers serve`. This file is the app:
limits, routing and the request's life; `protocol.py` validates requests and shapes replies, `images.py` fetches and
decodes images, `batching.py` runs generation in one worker thread. The event loop only reads bodies, routes and
writes: JSON parsing, image decoding, chat-template rendering and tokenization run in a small thread pool, so one
heavy request never stalls the others.

Safety: every limit answers with a 4xx JSON error in OpenAI's format that names the limit and the flag that raises it,
and is checked before the step it protects: request bytes (413, from Content-Length before the body is read), JSON
depth and number size (400, pydantic's parser), prompt text (400, before tokenizing), images per request (400),
image bytes and pixels and aspect ratio (413/400, from the header before decoding), prompt tokens and output tokens
(400), request timeout (408), concurrent requests (429). A client that disconnects, streaming or not, has its batch
row cancelled. Images come only as `data:` URLs, or as http(s) URLs on --allowed_image_hosts (see images.py). With
--api_key_env NAME, /v1/* requires `Authorization: Bearer <value of $NAME>`. A failing request never ends the server.
"""

import asyncio
import hmac
import json
import os
import socket
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import jinja2
import torch

from llava_hf.serving.arguments import ModelArguments, ServeArguments
from llava_hf.serving.batching import BatchingEngine, GenerationJob
from llava_hf.serving.images import decode_image, image_bytes
from llava_hf.serving.inference import load_model_and_processor
from llava_hf.serving.protocol import (
    ChatRequest,
    RequestError,
    completion_body,
    find_injected_token,
    parse_chat_request,
    usage_body,
    without_text,
)
from llava_hf.utils.command_line import usage_error

try:
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.background import BackgroundTask
    from starlette.exceptions import HTTPException
except ImportError as error:  # the serve extra is optional; the rest of llava_hf works without it
    raise ImportError("llava-hf serve needs FastAPI and uvicorn: pip install 'llava_hf[serve]'") from error

STATIC_DIR = Path(__file__).parent / "static"


class LlavaServer:
    """The request's life between HTTP and the batcher: limits, input preparation, generation events -> replies."""

    def __init__(self, model, processor, settings: ServeArguments, model_name: str):
        self.processor = processor
        self.settings = settings
        self.model_name = model_name
        tokenizer = processor.tokenizer
        special = {token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
        self.control_tokens = tuple(sorted({processor.image_token, *tokenizer.all_special_tokens, *special}))
        # A token covers at most as many characters as the longest vocabulary entry, so text longer than
        # max_prompt_tokens x that cannot fit the prompt: refused without tokenizing it.
        self.max_text_chars = settings.max_prompt_tokens * max(len(token) for token in tokenizer.get_vocab())
        self.context_length = model.config.get_text_config().max_position_embeddings
        self.engine = BatchingEngine(model, tokenizer, settings.max_batch_size, settings.batch_wait_ms / 1000)
        self.api_key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self.prepare_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="llava-hf-prepare")
        self.processor_lock = threading.Lock()  # one processor call at a time: the Rust tokenizer is not re-entrant
        self.in_flight = 0
        self.created = int(time.time())
        self.page = (STATIC_DIR / "chat.html").read_text()

    def start(self):
        self.engine.start()

    def close(self):
        self.engine.stop()
        self.prepare_pool.shutdown(wait=False, cancel_futures=True)

    # ---- the steps of a chat completion, in order -------------------------------------------------------------------

    def check_api_key(self, request: Request):
        if self.api_key is None:
            return
        sent = request.headers.get("authorization", "")
        if not (sent.startswith("Bearer ") and hmac.compare_digest(sent[7:].encode(), self.api_key.encode())):
            raise RequestError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'.")

    async def read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 from its Content-Length (or as it streams in) when over the limit."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise RequestError(415, f"Content-Type must be application/json, got {content_type or 'none'!r}.")
        limit = self.settings.max_request_bytes
        declared = int(request.headers.get("content-length", "0"))  # uvicorn has checked it is a number
        body = bytearray()
        if declared <= limit:
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    break
        if max(declared, len(body)) > limit:
            raise RequestError(
                413,
                f"the request body is {max(declared, len(body))} bytes or more; the limit is {limit} "
                "(--max_request_bytes).",
                headers={"Connection": "close"},  # the unread rest of the body makes the connection unusable
            )
        return bytes(body)

    def admit(self) -> "Admission":
        if self.in_flight >= self.settings.max_concurrent_requests:
            raise RequestError(
                429,
                f"the server is at its limit of {self.settings.max_concurrent_requests} concurrent requests "
                "(--max_concurrent_requests); retry shortly.",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        return Admission()

    def prepare(self, body: bytes) -> tuple[ChatRequest, torch.Tensor, torch.Tensor | None]:
        """Parse and validate the body, fetch and decode the images, render the chat template, check it, tokenize.

        Returns `(request, input_ids [T], image inputs)`: `{"pixel_values": [N, 3, H, W]}` (LLaVA-1.6: `[N, tiles, 3,
        H, W]` and `image_sizes` `[N, 2]`), empty without images. Runs in the prepare pool, off the
        event loop: one hop per request, because on a busy machine every thread hand-off waits for a free core.
        """
        chat = parse_chat_request(body, self.settings, self.model_name, self.max_text_chars)
        limits = self.settings
        images = [
            decode_image(image_bytes(url, limits.max_image_bytes, limits.allowed_image_hosts), limits.max_image_pixels)
            for url in chat.image_urls
        ]
        with self.processor_lock:
            try:
                prompt, skeleton = (
                    self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                    for messages in (chat.messages, without_text(chat.messages))
                )
            except (ValueError, jinja2.TemplateError) as error:  # e.g. a template that refuses the role order
                raise RequestError(400, f"the conversation cannot be encoded: {error}", "messages") from error
            injected = find_injected_token(prompt, skeleton, self.control_tokens)
            if injected == self.processor.image_token:
                raise RequestError(
                    400, f"message text contains {injected!r}; send images as image_url parts instead.", "messages"
                )
            if injected is not None:
                raise RequestError(
                    400, f"message text contains the control token {injected!r}; remove it from the text.", "messages"
                )
            inputs = self.processor(text=[prompt], images=images or None, return_tensors="pt")
        prompt_tokens = inputs["input_ids"].shape[1]
        if prompt_tokens > limits.max_prompt_tokens:
            raise RequestError(
                400,
                f"the prompt is {prompt_tokens} tokens (images included); the limit is {limits.max_prompt_tokens} "
                "(--max_prompt_tokens).",
                "messages",
            )
        if prompt_tokens + chat.max_tokens > self.context_length:
            raise RequestError(
                400,
                f"the prompt ({prompt_tokens} tokens) plus max_tokens ({chat.max_tokens}) exceeds the model's "
                f"context of {self.context_length} tokens; shorten the conversation or lower max_tokens.",
                "max_tokens",
            )
        image_inputs = {key: inputs[key] for key in ("pixel_values", "image_sizes") if key in inputs}
        return chat, inputs["input_ids"][0], image_inputs

    def submit(self, chat: ChatRequest, input_ids, image_inputs: dict) -> tuple[GenerationJob, asyncio.Queue]:
        """Hand the request to the batcher; its events arrive on the returned queue."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = GenerationJob(
            input_ids=input_ids,
            pixel_values=image_inputs.get("pixel_values"),
            image_sizes=image_inputs.get("image_sizes"),
            max_new_tokens=chat.max_tokens,
            emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event),
            temperature=chat.temperature,
            top_p=chat.top_p,
            stop=chat.stop,
        )
        try:
            self.engine.submit(job)
        except RuntimeError as error:
            raise RequestError(503, str(error)) from error
        return job, events

    def release(self, admission: "Admission"):
        """End an admitted request (once, however many paths reach here) and free its batch row if it has one."""
        if admission.released:
            return
        admission.released = True
        self.in_flight -= 1
        if admission.job is not None:
            admission.job.cancelled.set()  # a no-op when finished; otherwise frees its row at the next decoding step

    async def chat_completion(self, request: Request):
        self.check_api_key(request)
        body = await self.read_body(request)
        admission = self.admit()
        streaming = False  # once the response streams, the stream releases the admission
        try:
            deadline = time.monotonic() + self.settings.request_timeout
            prepared = asyncio.get_running_loop().run_in_executor(self.prepare_pool, self.prepare, body)
            chat, input_ids, image_inputs = await self.before(deadline, prepared)
            admission.job, events = self.submit(chat, input_ids, image_inputs)
            completion_id = f"chatcmpl-{uuid.uuid4().hex}"
            if chat.stream:
                # Released when the stream ends, or by the background task Starlette runs after the response even
                # when the client left before the stream started.
                stream = self.stream(chat, admission, events, deadline, completion_id)
                headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
                streaming = True
                return StreamingResponse(
                    stream,
                    media_type="text/event-stream",
                    headers=headers,
                    background=BackgroundTask(self.release, admission),
                )
            event = await self.until_done(events, deadline, request)
            message = {"role": "assistant", "content": event["text"]}
            choice = {"index": 0, "message": message, "finish_reason": event["finish_reason"], "logprobs": None}
            usage = usage_body(len(input_ids), event["completion_tokens"])
            return JSONResponse(completion_body(completion_id, "chat.completion", self.model_name, [choice], usage))
        finally:
            if not streaming:
                self.release(admission)

    async def before(self, deadline: float, awaitable):
        """Await `awaitable` until the request's deadline; past it, 408."""
        try:
            return await asyncio.wait_for(awaitable, timeout=max(deadline - time.monotonic(), 0))
        except TimeoutError as error:
            raise RequestError(
                408, f"the request did not finish within {self.settings.request_timeout} s (--request_timeout)."
            ) from error

    async def until_done(self, events: asyncio.Queue, deadline: float, request: Request) -> dict:
        """The job's final event; raises ClientGone if the client disconnects first (its row is then cancelled)."""

        async def last_event() -> dict:
            while (event := await events.get())["type"] == "delta":
                pass
            if event["type"] == "error":
                raise RequestError(500, event["message"])
            return event

        async def disconnect() -> None:
            # The body has been read, so the next ASGI message is http.disconnect, whenever the client leaves.
            while (await request.receive())["type"] != "http.disconnect":
                pass

        done = asyncio.ensure_future(last_event())
        gone = asyncio.ensure_future(disconnect())
        try:
            await self.before(deadline, asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED))
        finally:
            for task in (done, gone):
                task.cancel()  # a no-op on the one that finished
        if not done.done():
            raise ClientGone()
        return done.result()

    async def stream(self, chat: ChatRequest, admission: "Admission", events, deadline: float, completion_id: str):
        """Server-sent events: one `chat.completion.chunk` per text delta, then the finish chunk and [DONE].

        A client that disconnects cancels this generator (Starlette), and the `finally` frees the job's row.
        """

        def chunk(delta: dict, finish_reason=None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return sse(completion_body(completion_id, "chat.completion.chunk", self.model_name, [choice]))

        try:
            yield chunk({"role": "assistant", "content": ""})
            while True:
                try:
                    event = await self.before(deadline, events.get())
                except RequestError as error:  # the status line is gone; report the timeout in the stream
                    yield sse(error.body())
                    return
                if event["type"] == "delta":
                    yield chunk({"content": event["text"]})
                    continue
                if event["type"] == "error":
                    yield sse(RequestError(500, event["message"]).body())
                    return
                yield chunk({}, event["finish_reason"])
                if chat.include_usage:
                    usage = usage_body(len(admission.job.input_ids), event["completion_tokens"])
                    yield sse(completion_body(completion_id, "chat.completion.chunk", self.model_name, [], usage))
                yield "data: [DONE]\n\n"
                return
        finally:
            self.release(admission)

    def health(self) -> dict:
        return {
            "status": "ok",
            "model": self.model_name,
            "in_flight": self.in_flight,
            "queued": self.engine.queued,
            "generating": self.engine.generating,
            "batches_run": self.engine.batches_run,
            "largest_recent_batch": max(self.engine.recent_batch_sizes, default=0),
            "cancelled_rows": self.engine.cancelled_rows,
        }


@dataclass
class Admission:
    """One request counted in `in_flight`: its batcher job once submitted, and whether it has been released."""

    job: GenerationJob | None = None
    released: bool = False


class ClientGone(Exception):
    """The client disconnected before its answer was ready; nobody is left to answer."""


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def build_app(server: LlavaServer) -> FastAPI:
    """The FastAPI app: four routes, errors in OpenAI's format, the batcher started and stopped with the app."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        server.start()
        yield
        server.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):  # routing: unknown path, wrong method
        message = {
            404: f"no route {request.url.path}; see / (web page), /health, /v1/models, /v1/chat/completions.",
            405: f"{request.url.path} does not accept {request.method}.",
        }.get(error.status_code, str(error.detail))
        return await request_error(request, RequestError(error.status_code, message, headers=error.headers))

    @app.exception_handler(ClientGone)
    async def client_gone(request: Request, error: ClientGone):
        return JSONResponse({}, status_code=499)  # never read: the connection is closed

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception):  # a bug must cost one request, never the server
        print(f"llava-hf serve: internal error on {request.method} {request.url.path}: {error!r}", file=sys.stderr)
        return JSONResponse(RequestError(500, f"internal error: {type(error).__name__}").body(), status_code=500)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return server.page

    @app.get("/health")
    async def health():
        return server.health()

    @app.get("/v1/models")
    async def models(request: Request):
        server.check_api_key(request)
        model = {"id": server.model_name, "object": "model", "created": server.created, "owned_by": "llava_hf"}
        return {"object": "list", "data": [model]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await server.chat_completion(request)

    return app


def refuse_large_headers(app, max_bytes: int = 65536):
    """ASGI wrapper: 431 for a request whose headers exceed `max_bytes` (uvicorn bounds them only while incomplete)."""

    async def guarded(scope, receive, send):
        if scope["type"] == "http" and sum(len(name) + len(value) for name, value in scope["headers"]) > max_bytes:
            error = RequestError(431, f"request headers exceed {max_bytes // 1024} KiB.")
            return await JSONResponse(error.body(), status_code=431)(scope, receive, send)
        await app(scope, receive, send)

    return guarded


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket already listening, so the address can be printed (and connected to) before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def uvicorn_server(app: FastAPI) -> uvicorn.Server:
    # Requests in progress get 10 s to finish at shutdown; uvicorn's access log stays off (one line per request).
    config = uvicorn.Config(
        refuse_large_headers(app),
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=65536,
        lifespan="on",
    )
    return uvicorn.Server(config)


class ServerThread:
    """Run the server in a background thread (tests, benchmarks, notebooks): `with ServerThread(...) as base_url`."""

    def __init__(self, model, processor, settings: ServeArguments, model_name: str = "llava"):
        self.server = LlavaServer(model, processor, settings, model_name)
        self.socket = listening_socket(settings.host, settings.port)
        self.uvicorn = uvicorn_server(build_app(self.server))
        self.thread = threading.Thread(
            target=self.uvicorn.run, kwargs={"sockets": [self.socket]}, name="llava-hf-server", daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc):
        self.uvicorn.should_exit = True
        self.thread.join(timeout=60)
        self.socket.close()


def serve(model_args: ModelArguments, settings: ServeArguments) -> int:
    """Load the checkpoint, listen, print the address and serve until stopped (`llava-hf serve`, serve.py)."""
    try:
        model, processor = load_model_and_processor(model_args)
        sock = listening_socket(settings.host, settings.port)
    except (ValueError, OSError) as error:
        return usage_error("llava-hf serve", error)
    server = LlavaServer(model, processor, settings, settings.served_model_name or model_args.model)
    host, port = sock.getsockname()[:2]
    print(f"llava-hf serve: {server.model_name} on http://{host}:{port} (OpenAI base_url http://{host}:{port}/v1)")
    sys.stdout.flush()
    uvicorn_server(build_app(server)).run(sockets=[sock])
    return 0
