"""A small client for any OpenAI-compatible `/v1/chat/completions` endpoint (OpenAI, vLLM, TGI, Ollama, llama.cpp).

Used by data generation (the teacher LLM) and by evaluation (the judge). Standard library only: requests run in a
thread pool sized to `concurrency`, so one `asyncio` loop can keep `concurrency` requests in flight while the caller
awaits results in any order.

    client = ChatClient("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct", api_key_env="OPENAI_API_KEY")
    result = await client.complete([{"role": "user", "content": "Hi"}], temperature=0.0, max_tokens=64)
    results = client.complete_many([[{"role": "user", "content": "Hi"}]] * 10)   # sync, from plain code

Contract:
- `base_url` includes the version prefix, as in the OpenAI SDK (`https://api.openai.com/v1`); requests go to
  `{base_url}/chat/completions`.
- The API key is read from the environment variable `api_key_env` at construction; when it is unset no
  `Authorization` header is sent (local servers need none).
- Retried with exponential backoff and jitter (honouring `Retry-After`): HTTP 408/409/429/5xx, timeouts, connection
  errors and 200 replies whose body is not a chat completion. Not retried: other 4xx (a bad request stays bad).
  After `max_retries` retries the last error is raised as `ChatError`.
- `timeout` is the socket timeout in seconds for connecting and for each read.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import random
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


@dataclass
class ChatResult:
    """One chat completion: the first choice's text and the token usage the server reported (0 when it reports none)."""

    text: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    model: str


class ChatError(RuntimeError):
    """A request that failed for good. `status` is the HTTP status (None for timeouts, connection errors, bad bodies)."""

    def __init__(self, message: str, status: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.retryable = retryable


class ChatClient:
    """Async client for an OpenAI-compatible chat-completions endpoint; see the module docstring for the contract."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
        concurrency: int = 8,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = os.environ.get(api_key_env) or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        # Our own pool: asyncio's default executor has only min(32, cpus + 4) threads, which would silently cap
        # the concurrency at 6 on a 2-core machine.
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="chat-client")
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    async def complete(self, messages: list[dict], **sampling) -> ChatResult:
        """Send one chat request (`sampling` = temperature, top_p, max_tokens, seed, ... passed through as is)."""
        body = json.dumps({"model": self.model, "messages": messages, **sampling}).encode()
        loop = asyncio.get_running_loop()
        # One semaphore per event loop: `complete_many` runs a fresh loop per call.
        semaphore = self._semaphores.setdefault(loop, asyncio.Semaphore(self.concurrency))
        attempt = 0
        while True:
            async with semaphore:
                try:
                    return await loop.run_in_executor(self._executor, self._post, body)
                except ChatError as error:
                    if not error.retryable or attempt >= self.max_retries:
                        raise
                    retry_after = getattr(error, "retry_after", None)
                    delay = self._backoff(attempt) if retry_after is None else retry_after
            # Sleep outside the semaphore so a backing-off request does not hold a slot.
            await asyncio.sleep(delay)
            attempt += 1

    def complete_many(self, list_of_messages: list[list[dict]], **sampling) -> list[ChatResult | Exception]:
        """Send many requests concurrently from synchronous code; results (or the exception) in input order."""

        async def run_all():
            tasks = [self.complete(messages, **sampling) for messages in list_of_messages]
            return await asyncio.gather(*tasks, return_exceptions=True)

        return asyncio.run(run_all())

    def close(self) -> None:
        """Stop the worker threads (requests in flight finish first)."""
        self._executor.shutdown(wait=True)

    def _backoff(self, attempt: int) -> float:
        # Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): spreads retries of many concurrent
        # requests that hit the same 429 so they do not come back in lockstep.
        return random.uniform(0.5, 1.0) * min(self.backoff_max, self.backoff_base * 2**attempt)

    def _post(self, body: bytes) -> ChatResult:
        """One blocking HTTP round trip (runs in a worker thread); raises ChatError with `retryable` set."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as http_error:
            detail = http_error.read()[:500].decode("utf-8", "replace")
            error = ChatError(
                f"{self.url} answered HTTP {http_error.code}: {detail}{_hint(http_error.code)}",
                status=http_error.code,
                retryable=http_error.code in RETRYABLE_STATUS,
            )
            error.retry_after = _retry_after(http_error.headers.get("Retry-After"))
            raise error from None
        except TimeoutError as timeout_error:
            raise ChatError(f"{self.url} did not answer within {self.timeout} s", retryable=True) from timeout_error
        except (urllib.error.URLError, http.client.HTTPException, OSError) as connection_error:
            reason = getattr(connection_error, "reason", connection_error)
            if isinstance(reason, (TimeoutError, socket.timeout)):
                raise ChatError(f"{self.url} did not answer within {self.timeout} s", retryable=True) from None
            raise ChatError(
                f"could not reach {self.url}: {reason} (is the server running and is base_url right?)",
                retryable=True,
            ) from None
        return self._parse(raw)

    def _parse(self, raw: bytes) -> ChatResult:
        try:
            payload = json.loads(raw)
            choice = payload["choices"][0]
            text = choice["message"].get("content") or ""
            usage = payload.get("usage") or {}
            return ChatResult(
                text=text,
                finish_reason=choice.get("finish_reason"),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                model=payload.get("model") or self.model,
            )
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            # A proxy error page or a half-written body: worth another try.
            snippet = raw[:200].decode("utf-8", "replace")
            raise ChatError(
                f"{self.url} returned a body that is not a chat completion: {snippet!r}", retryable=True
            ) from None


def _retry_after(value: str | None) -> float | None:
    try:
        return min(float(value), 300.0) if value else None
    except ValueError:
        return None  # an HTTP date; fall back to our own backoff


def _hint(status: int) -> str:
    if status == 401:
        return " (set the API key in the environment variable named by api_key_env)"
    if status == 404:
        return " (check that base_url ends with the version prefix, e.g. /v1, and that the model name exists)"
    return ""
