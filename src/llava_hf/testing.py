"""The tiny LLaVA that tests, benchmarks and examples share (like transformers' `testing_utils`): one definition.

    from llava_hf.testing import make_tiny_model, make_tiny_processor
    model, processor = make_tiny_model(), make_tiny_processor()      # built in-process in milliseconds, offline

The tiny model: a CLIP vision tower at 32 px with patch 8 (16 image tokens per image after dropping CLS), a 2-layer
Llama of width 32, and a 512-token byte-level BPE tokenizer shaped like a real LLaVA one (`<image>` and `<pad>` as
special tokens), shipped with the package in `testing_assets/tiny_tokenizer/` (tests/assets/make_tiny_tokenizer.py
regenerates it). Also: transformers' built-in Llava holding the same weights (parity checks), noise images, a
synthetic LLaVA JSON + image folder for the tiny training recipes, and a real OpenAI-compatible HTTP server on
127.0.0.1 with scripted replies and injected failures (`OpenAIServer`, `Reply`; `TeacherScript` answers datagen
requests with valid outputs) for teacher and judge tests and the datagen benchmark.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig
from transformers import LlavaConfig as BuiltinLlavaConfig
from transformers import LlavaForConditionalGeneration as BuiltinLlava

from .datagen.prompts import TASK_TYPES, TYPES_WITH_BOXES, format_context, load_prompt_set
from .modeling import (
    LlavaHfConfig,
    LlavaHfForConditionalGeneration,
    LlavaHfNextConfig,
    LlavaHfNextForConditionalGeneration,
)
from .processing import LlavaHfNextProcessor, LlavaHfProcessor, build_image_processor, build_next_image_processor

TINY_TOKENIZER_DIR = Path(__file__).with_name("testing_assets") / "tiny_tokenizer"
TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_IMAGE_TOKENS = (TINY_IMAGE_SIZE // TINY_PATCH_SIZE) ** 2
# The tiny towers' sizes, for every tiny model (tests, benchmarks, examples); any vision config class takes TINY_VISION
# (CLIP, SigLIP), any causal LM config class TINY_TEXT (Llama, Mistral, Qwen2).
TINY_VISION = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=TINY_IMAGE_SIZE,
    patch_size=TINY_PATCH_SIZE,
)
TINY_TEXT = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
)


def load_tiny_tokenizer():
    return AutoTokenizer.from_pretrained(TINY_TOKENIZER_DIR)


def make_tiny_config(tokenizer=None, config_class=LlavaHfConfig, **overrides) -> LlavaHfConfig:
    """The tiny LLaVA-1.5 config; `config_class=LlavaHfNextConfig` for the LLaVA-1.6 one (pinpoints of 32 px tiles)."""
    tokenizer = tokenizer or load_tiny_tokenizer()
    vision_config = CLIPVisionConfig(**TINY_VISION, projection_dim=32)
    text_config = make_tiny_text_config(tokenizer)
    kwargs = dict(vision_config=vision_config, text_config=text_config, image_token_index=tokenizer.image_token_id)
    kwargs.update(overrides)
    return config_class(**kwargs)


def make_tiny_text_config(tokenizer, config_class=LlamaConfig):
    """A 2-layer LM of width 32 over the tiny tokenizer; `config_class` picks the family (Llama, Mistral, Qwen2)."""
    return config_class(
        vocab_size=len(tokenizer),
        **TINY_TEXT,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def builtin_llava_config(config: LlavaHfConfig) -> BuiltinLlavaConfig:
    """transformers' built-in LlavaConfig describing the same model as our `config` (mlp2x_gelu projector)."""
    return BuiltinLlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
    )


def builtin_llava_twin(model: LlavaHfForConditionalGeneration) -> BuiltinLlava:
    """transformers' built-in Llava with exactly our weights (the in-memory module names are the same)."""
    builtin = BuiltinLlava(builtin_llava_config(model.config))
    missing, unexpected = builtin.load_state_dict(model.state_dict(), strict=True)
    assert not missing and not unexpected
    builtin.generation_config = model.generation_config
    return builtin.eval()


def make_tiny_model(config=None, seed: int = 0) -> LlavaHfForConditionalGeneration:
    torch.manual_seed(seed)
    config = config or make_tiny_config()
    model_class = (
        LlavaHfNextForConditionalGeneration
        if isinstance(config, LlavaHfNextConfig)
        else LlavaHfForConditionalGeneration
    )
    model = model_class(config)
    model.generation_config.max_new_tokens = 8
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model.eval()


def make_tiny_quantizable_model(seed: int = 0) -> LlavaHfForConditionalGeneration:
    """The tiny model with a language model of width 64 (MLP 128): bitsandbytes' 4-bit CPU kernel packs weights in
    blocks of 64 input features, so width 32 cannot run in 4-bit on CPU (every released LLM's widths can)."""
    tokenizer = load_tiny_tokenizer()
    text_config = make_tiny_text_config(tokenizer)
    text_config.hidden_size, text_config.intermediate_size, text_config.head_dim = 64, 128, 16
    return make_tiny_model(make_tiny_config(tokenizer, text_config=text_config), seed)


def make_tiny_processor(tokenizer=None, image_aspect_ratio="pad", chat_template=None) -> LlavaHfProcessor:
    tokenizer = tokenizer or load_tiny_tokenizer()
    return LlavaHfProcessor(
        image_processor=build_image_processor(TINY_IMAGE_SIZE, image_aspect_ratio),
        tokenizer=tokenizer,
        chat_template=chat_template,
        image_seq_length=TINY_IMAGE_TOKENS,
        patch_size=TINY_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )


def make_tiny_next_model(config=None, seed: int = 0, **overrides) -> LlavaHfNextForConditionalGeneration:
    """The tiny LLaVA-1.6: the tiny LLaVA's towers with AnyRes over 32 px tiles (1x2 .. 3x1 grids)."""
    return make_tiny_model(config or make_tiny_config(config_class=LlavaHfNextConfig, **overrides), seed)


def make_tiny_next_processor(tokenizer=None, chat_template=None, config=None) -> LlavaHfNextProcessor:
    config = config or make_tiny_config(tokenizer, config_class=LlavaHfNextConfig)
    return LlavaHfNextProcessor(
        image_processor=build_next_image_processor(config.vision_config.image_size, config.image_grid_pinpoints),
        tokenizer=tokenizer or load_tiny_tokenizer(),
        chat_template=chat_template,
        mm_patch_merge_type=config.mm_patch_merge_type,
        **config.image_token_settings,
    )


def make_image(seed: int = 0, size=(40, 48), mode="RGB") -> Image.Image:
    """Random-noise image of `size` (width, height)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


def make_tiny_parts(folder: Path, real_shaped: Path) -> tuple[Path, Path]:
    """Copy the stand-ins of openai/clip-vit-large-patch14-336 (a full CLIPModel, old-format preprocessor config) and
    lmsys/vicuna-7b-v1.5 (SentencePiece tokenizer without `<image>` or pad) from `real_shaped` (the repository's
    tests/assets/real_shaped) to `folder`; returns their two folders. They are shaped like the real parts, so a tiny
    run takes the same path as the 7B recipes."""
    vision_dir, language_dir = folder / "vision", folder / "language"
    shutil.copytree(real_shaped / "clip-vit-large-patch14-336", vision_dir, dirs_exist_ok=True)
    shutil.copytree(real_shaped / "vicuna-7b-v1.5", language_dir, dirs_exist_ok=True)
    return vision_dir, language_dir


def make_tiny_data(folder: Path, num_rows: int = 64, seed: int = 0) -> tuple[Path, Path]:
    """A synthetic LLaVA JSON (original format) and its image folder; returns (json path, image folder)."""
    from .data.synthetic import make_shape_rows

    image_folder = folder / "images"
    image_folder.mkdir(parents=True, exist_ok=True)
    records = []
    for row in make_shape_rows(num_rows, seed=seed, image_size=64, lengths="realistic"):
        record = {"id": row["id"], "conversations": []}
        if row["images"]:
            record["image"] = f"{row['id']}.png"
            row["images"][0].save(image_folder / record["image"])
        for message in row["messages"]:
            text = "".join(part["text"] for part in message["content"] if part["type"] == "text")
            has_image = any(part["type"] == "image" for part in message["content"])
            speaker = "human" if message["role"] == "user" else "gpt"
            record["conversations"].append({"from": speaker, "value": ("<image>\n" if has_image else "") + text})
        records.append(record)
    json_path = folder / "tiny_llava.json"
    json_path.write_text(json.dumps(records, indent=1))
    return json_path, image_folder


# ---------------------------------------------------------------------------------------------------------------------
# A local OpenAI-compatible server (teachers and judges in tests and benchmarks)
#
# A real OpenAI-compatible HTTP server for tests: scripted replies and injected failures, on 127.0.0.1.
#
#     from llava_hf.testing import OpenAIServer, Reply
#
#     with OpenAIServer(script=[Reply(status=429), Reply(text="hello")]) as server:
#         client = ChatClient(server.base_url, model="test")   # base_url = "http://127.0.0.1:<port>/v1"
#         ...
#         assert server.request_count == 2
#         server.requests[-1]["body"]["messages"]               # every request, parsed, in arrival order
#
# Which reply a request gets, in order of precedence:
# 1. the next unused entry of `script` (a list of `Reply`, consumed first-come first-served);
# 2. otherwise `responder(body)` if given (a function of the parsed request body, for replies that depend on the prompt);
# 3. otherwise `default` (`Reply(text="ok")` unless given).
# Every reply is delayed by `latency` seconds on top of its own `delay`.
#
# Failure injection through `Reply`: `status=429/500/...` (an OpenAI-style JSON error body, `headers` for Retry-After),
# `delay=` longer than the client's timeout (a timeout), `raw=b"..."` (a malformed body sent as is with `status`),
# `close=True` (drop the connection without answering), `finish_reason="length"` (a truncated completion).
#
# Runs a `ThreadingHTTPServer` in a daemon thread (one thread per connection, so slow replies overlap like a real
# server's). Only POST `{base_url}/chat/completions` is served; other paths get 404.


@dataclass
class Reply:
    """What the server answers to one request."""

    text: str = "ok"
    finish_reason: str = "stop"
    status: int = 200
    delay: float = 0.0
    raw: bytes | None = None
    close: bool = False
    prompt_tokens: int = 10
    completion_tokens: int | None = None  # default: the number of words in `text`
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    # The default listen backlog of 5 drops connections when many clients connect at once, and the kernel then
    # retries the SYN a second later: a benchmark at concurrency 32 would measure that, not the client.
    request_queue_size = 1024


class OpenAIServer:
    """Context manager: starts the server on a free port, yields itself, stops it on exit."""

    def __init__(
        self,
        script: list[Reply] | None = None,
        responder: Callable[[dict], Reply] | None = None,
        default: Reply | None = None,
        latency: float = 0.0,
        model: str = "test-teacher",
    ):
        self.script = list(script or [])
        self.responder = responder
        self.default = default or Reply()
        self.latency = latency
        self.model = model
        self.requests: list[dict] = []  # {"path", "body" (parsed JSON or None), "headers", "time"}
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def __enter__(self) -> OpenAIServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                try:
                    body = json.loads(data)
                except ValueError:
                    body = None
                reply = server._next_reply(self.path, body, {key.title(): value for key, value in self.headers.items()})
                time.sleep(server.latency + reply.delay)
                if self.path != "/v1/chat/completions":
                    reply = Reply(status=404, raw=b'{"error": {"message": "not found"}}')
                if reply.close:
                    self.close_connection = True
                    return
                if reply.raw is not None:
                    payload = reply.raw
                elif reply.status != 200:
                    payload = json.dumps({"error": {"message": f"injected {reply.status}", "code": reply.status}})
                    payload = payload.encode()
                else:
                    payload = json.dumps(server._completion(reply, body)).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout) before we answered

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True  # slow handlers must not block shutdown
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next_reply(self, path: str, body: dict | None, headers: dict) -> Reply:
        with self._lock:
            self.requests.append({"path": path, "body": body, "headers": headers, "time": time.monotonic()})
            if self.script:
                return self.script.pop(0)
        if self.responder is not None and body is not None:
            return self.responder(body)
        return self.default

    def _completion(self, reply: Reply, body: dict | None) -> dict:
        completion_tokens = reply.completion_tokens
        if completion_tokens is None:
            completion_tokens = len(reply.text.split())
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": (body or {}).get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": reply.prompt_tokens + completion_tokens,
            },
        }


# ---------------------------------------------------------------------------------------------------------------------
# A scripted datagen teacher for that server


VALID_OUTPUTS = {
    "conversation": "Question:\nWhat is in the picture?\n===\nAnswer:\nA busy scene.\n===\n"
    "Question:\nIs it daytime?\n===\nAnswer:\nYes, it looks like daytime.\n===",
    "detail": "The picture shows a scene with several objects arranged around the frame.",
    "complex": "Question:\nWhat might happen next?\n===\nAnswer:\nThe people will probably keep going.\n===",
}


class TeacherScript:
    """A server `responder`: finds which (image id, type) a request is for and answers with a valid output, or with
    the replies queued in `overrides[(image id, type)]` first (for injected leaks, truncations, ...)."""

    def __init__(self, images):
        prompts = load_prompt_set()
        self.type_of_system = {template.system: name for name, template in prompts.templates.items()}
        self.id_of_context = {
            (task_type, format_context(image, TYPES_WITH_BOXES[task_type])): image.id
            for image in images
            for task_type in TASK_TYPES
        }
        self.overrides: dict[tuple[str, str], list[Reply]] = {}
        self.jobs_requested: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def job_of(self, body: dict) -> tuple[str, str]:
        messages = body["messages"]
        task_type = self.type_of_system[messages[0]["content"]]
        return self.id_of_context[(task_type, messages[-1]["content"])], task_type

    def __call__(self, body: dict) -> Reply:
        job = self.job_of(body)
        with self._lock:
            self.jobs_requested.append(job)
            queued = self.overrides.get(job)
            if queued:
                return queued.pop(0)
        return Reply(text=VALID_OUTPUTS[job[1]], prompt_tokens=100)
