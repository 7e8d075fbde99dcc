"""OpenAI-compatible chat endpoints (OpenAI, vLLM, TGI, Ollama, llama.cpp) for the datagen teacher and the judge, on the
`openai` SDK (`pip install openai`, in the datagen and eval extras).

    settings = EndpointArguments("http://127.0.0.1:8000/v1", model="Qwen/Qwen2.5-7B-Instruct")
    client = ChatClient.from_settings(settings)
    result = await client.complete([{"role": "user", "content": "Hi"}], temperature=0.0, max_tokens=64)
    results = client.complete_many([[{"role": "user", "content": "Hi"}]] * 10)   # sync, from plain code

Contract:
- `base_url` includes the version prefix, as in the OpenAI SDK (`https://api.openai.com/v1`).
- The API key is read from the environment variable `api_key_env` at construction; when it is unset no
  `Authorization` header is sent (local servers need none).
- Retries are the SDK's (`max_retries`, exponential backoff with jitter, `Retry-After` honoured): HTTP 408/409/429/5xx,
  timeouts and connection errors. A 200 reply whose body is not a chat completion (a proxy's error page) is also
  retried, up to `max_retries` times. Other 4xx are not retried (a bad request stays bad). A request that fails for
  good raises `ChatError` with the HTTP status.
- `timeout` is the SDK's request timeout in seconds; at most `concurrency` requests are in flight per event loop.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field


@dataclass
class EndpointArguments:
    """Where an OpenAI-compatible endpoint is and how to talk to it (teachers and judges alike)."""

    base_url: str
    model: str
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 120.0
    max_retries: int = 5
    concurrency: int = 8


# The command-line settings of the two roles an endpoint plays, declared once so that every command spells them alike
# (`--teacher_base_url`, `--judge_model`, ...). Keyword-only, so that a command's own required fields may follow them.
@dataclass(kw_only=True)
class TeacherEndpointArguments:
    """The teacher LLM's OpenAI-compatible endpoint (it writes instruction data), for a command's settings."""

    teacher_base_url: str | None = field(
        default=None,
        metadata={"help": "teacher LLM's OpenAI-compatible endpoint incl. /v1, e.g. http://127.0.0.1:8000/v1"},
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "teacher model name as the endpoint knows it (with --teacher-base-url)"}
    )
    teacher_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the teacher endpoint's API key"}
    )

    def teacher_endpoint(self, **client_settings) -> EndpointArguments:
        """The teacher's `EndpointArguments`; `client_settings` = timeout, max_retries, concurrency."""
        return EndpointArguments(
            self.teacher_base_url, self.teacher_model, api_key_env=self.teacher_api_key_env, **client_settings
        )


@dataclass(kw_only=True)
class JudgeEndpointArguments:
    """The LLM judge's OpenAI-compatible endpoint (it scores open answers), for a command's settings."""

    judge_base_url: str | None = field(
        default=None,
        metadata={"help": "LLM judge's OpenAI-compatible endpoint incl. /v1, e.g. http://127.0.0.1:8000/v1"},
    )
    judge_model: str | None = field(
        default=None, metadata={"help": "judge model name as the endpoint knows it (with --judge-base-url)"}
    )
    judge_api_key_env: str = field(
        default="OPENAI_API_KEY", metadata={"help": "environment variable holding the judge endpoint's API key"}
    )

    def judge_endpoint(self, **client_settings) -> EndpointArguments:
        """The judge's `EndpointArguments`; `client_settings` = timeout, max_retries, concurrency."""
        return EndpointArguments(
            self.judge_base_url, self.judge_model, api_key_env=self.judge_api_key_env, **client_settings
        )


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

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class ChatClient:
    """Async client for an OpenAI-compatible chat-completions endpoint; see the module docstring for the contract."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 120.0,
        max_retries: int = 5,
        concurrency: int = 8,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/chat/completions"
        self.model = model
        self.api_key = os.environ.get(api_key_env) or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        # One SDK client and one semaphore per event loop: `complete_many` runs a fresh loop per call, and an async
        # HTTP connection pool belongs to the loop that opened it.
        self._per_loop: dict[asyncio.AbstractEventLoop, tuple] = {}

    @classmethod
    def from_settings(cls, settings: EndpointArguments) -> ChatClient:
        """A client for `settings`: an `EndpointArguments` or a subclass of it (the judge settings)."""
        return cls(
            settings.base_url,
            settings.model,
            api_key_env=settings.api_key_env,
            timeout=settings.timeout,
            max_retries=settings.max_retries,
            concurrency=settings.concurrency,
        )

    def _client(self):
        loop = asyncio.get_running_loop()
        if loop not in self._per_loop:
            import openai

            client = openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self.api_key or "unused",  # the SDK needs one; the header is omitted below when unset
                timeout=self.timeout,
                max_retries=self.max_retries,
            )
            self._per_loop[loop] = (client, asyncio.Semaphore(self.concurrency))
        return self._per_loop[loop]

    async def complete(self, messages: list[dict], **sampling) -> ChatResult:
        """Send one chat request (`sampling` = temperature, top_p, max_tokens, seed, ... passed through as is)."""
        import openai

        client, semaphore = self._client()
        headers = {} if self.api_key else {"Authorization": openai.Omit()}
        for attempt in range(self.max_retries + 1):
            async with semaphore:
                try:
                    completion = await client.chat.completions.create(
                        model=self.model, messages=messages, extra_headers=headers, **sampling
                    )
                    return self._result(completion)
                except openai.APIStatusError as error:
                    detail = error.response.text[:500]
                    raise ChatError(
                        f"{self.url} answered HTTP {error.status_code}: {detail}{_hint(error.status_code)}",
                        status=error.status_code,
                    ) from None
                except openai.APITimeoutError:
                    raise ChatError(f"{self.url} did not answer within {self.timeout} s") from None
                except openai.APIConnectionError as error:
                    raise ChatError(
                        f"could not reach {self.url}: {error.__cause__ or error} (is the server running and is "
                        "base_url right?)"
                    ) from None
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as error:
                    # A proxy error page or a half-written body on a 200: worth another try.
                    bad_body = ChatError(f"{self.url} returned a body that is not a chat completion: {error}")
            if attempt < self.max_retries:  # sleep outside the semaphore so a backing-off request holds no slot
                await asyncio.sleep(random.uniform(0.25, 0.5) * 2**attempt)
        raise bad_body

    def _result(self, completion) -> ChatResult:
        choice = completion.choices[0]  # IndexError for a body without choices
        usage = completion.usage
        return ChatResult(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            model=completion.model or self.model,
        )

    def complete_many(self, list_of_messages: list[list[dict]], **sampling) -> list[ChatResult | Exception]:
        """Send many requests concurrently from synchronous code; results (or the exception) in input order."""

        async def run_all():
            try:
                tasks = [self.complete(messages, **sampling) for messages in list_of_messages]
                return await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                entry = self._per_loop.pop(asyncio.get_running_loop(), None)
                if entry is not None:
                    await entry[0].close()

        return asyncio.run(run_all())

    def close(self) -> None:
        """Forget the per-loop SDK clients (their connections close with their event loops)."""
        self._per_loop.clear()


def _hint(status: int) -> str:
    if status == 401:
        return " (set the API key in the environment variable named by api_key_env)"
    if status == 404:
        return " (check that base_url ends with the version prefix, e.g. /v1, and that the model name exists)"
    return ""
