"""ChatClient against a real local HTTP server: replies, usage, retries on 429/5xx/timeouts/bad bodies, no retry on
other 4xx, the API key, and that `concurrency` requests really are in flight at once."""

import asyncio
import time

import pytest

from helpers.openai_server import OpenAIServer, Reply
from llava_hf.llm_client import ChatClient, ChatError, ChatResult

MESSAGES = [{"role": "user", "content": "Hello"}]


def make_client(server, **overrides):
    settings = {"timeout": 2.0, "max_retries": 3, "concurrency": 4, "backoff_base": 0.01, **overrides}
    return ChatClient(server.base_url, model="teacher-x", **settings)


def test_reply_usage_and_request_body():
    with OpenAIServer(default=Reply(text="Hi there", prompt_tokens=7, completion_tokens=2)) as server:
        result = asyncio.run(make_client(server).complete(MESSAGES, temperature=0.2, max_tokens=16))
    assert result == ChatResult("Hi there", "stop", 7, 2, "teacher-x")
    body = server.requests[0]["body"]
    assert body == {"model": "teacher-x", "messages": MESSAGES, "temperature": 0.2, "max_tokens": 16}
    assert server.requests[0]["path"] == "/v1/chat/completions"


@pytest.mark.parametrize(
    "failure",
    [
        Reply(status=429, headers={"Retry-After": "0"}),
        Reply(status=500),
        Reply(status=503),
        Reply(raw=b"<html>bad gateway</html>"),
        Reply(raw=b'{"choices": []}'),
        Reply(close=True),
        Reply(delay=1.0),  # longer than the client's timeout below
    ],
    ids=["429", "500", "503", "html-body", "no-choices", "dropped-connection", "timeout"],
)
def test_retries_transient_failures(failure):
    with OpenAIServer(script=[failure, failure], default=Reply(text="finally")) as server:
        result = asyncio.run(make_client(server, timeout=0.3).complete(MESSAGES))
    assert result.text == "finally"
    assert server.request_count == 3


def test_gives_up_after_max_retries_with_the_last_error():
    with OpenAIServer(default=Reply(status=500)) as server:
        with pytest.raises(ChatError, match="HTTP 500") as error:
            asyncio.run(make_client(server, max_retries=2).complete(MESSAGES))
    assert error.value.status == 500
    assert server.request_count == 3  # the first try + 2 retries


@pytest.mark.parametrize("status", [400, 401, 404])
def test_does_not_retry_client_errors(status):
    with OpenAIServer(default=Reply(status=status)) as server:
        with pytest.raises(ChatError, match=f"HTTP {status}"):
            asyncio.run(make_client(server).complete(MESSAGES))
    assert server.request_count == 1


def test_api_key_from_environment(monkeypatch):
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-test")
    with OpenAIServer() as server:
        asyncio.run(make_client(server, api_key_env="MY_TEACHER_KEY").complete(MESSAGES))
        monkeypatch.delenv("MY_TEACHER_KEY")
        asyncio.run(make_client(server, api_key_env="MY_TEACHER_KEY").complete(MESSAGES))
    assert server.requests[0]["headers"]["Authorization"] == "Bearer sk-test"
    assert "Authorization" not in server.requests[1]["headers"]


def test_complete_many_keeps_order_and_returns_exceptions():
    def responder(body):
        text = body["messages"][0]["content"]
        return Reply(status=400) if text == "bad" else Reply(text=text.upper())

    with OpenAIServer(responder=responder) as server:
        batch = [[{"role": "user", "content": word}] for word in ["a", "bad", "c"]]
        results = make_client(server).complete_many(batch)
    assert [r.text for r in (results[0], results[2])] == ["A", "C"]
    assert isinstance(results[1], ChatError)


def test_concurrency_keeps_that_many_requests_in_flight():
    latency, concurrency, count = 0.2, 4, 12
    with OpenAIServer(latency=latency) as server:
        client = make_client(server, concurrency=concurrency)
        started = time.monotonic()
        results = client.complete_many([MESSAGES] * count)
        elapsed = time.monotonic() - started
    assert all(isinstance(result, ChatResult) for result in results)
    ideal = count / concurrency * latency  # 3 waves of 0.2 s
    assert ideal <= elapsed < ideal + 0.4, elapsed
