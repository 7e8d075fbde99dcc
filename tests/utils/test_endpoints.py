"""ChatClient against a real local HTTP server: replies, usage, retries on 429/5xx/timeouts/bad bodies, no retry on
other 4xx, the API key, and that `concurrency` requests really are in flight at once."""

import asyncio
import threading
import time

import pytest

from llava_hf.testing import OpenAIServer, Reply
from llava_hf.utils.endpoints import ChatClient, ChatError, ChatResult

MESSAGES = [{"role": "user", "content": "Hello"}]


def make_client(server, **overrides):
    # A generous timeout: a request slowed by a loaded machine must not be retried (only the timeout test sets one).
    settings = {"timeout": 120.0, "max_retries": 3, "concurrency": 4, **overrides}
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
        Reply(delay=60.0),  # far longer than the client's timeout below
    ],
    ids=["429", "500", "503", "html-body", "no-choices", "dropped-connection", "timeout"],
)
def test_retries_transient_failures(failure):
    with OpenAIServer(script=[failure, failure], default=Reply(text="finally")) as server:
        # The one timed setting: a timeout test needs a timeout. The server holds the failing replies for 60 s, so
        # they always time out; the good reply only has to arrive within 2 s.
        timeout = 2.0 if failure.delay else 120.0
        result = asyncio.run(make_client(server, timeout=timeout).complete(MESSAGES))
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
    # Event-based, not timed: the first requests are held until `concurrency` of them are inside the server at once
    # (so a client that sends fewer never gets past the first wave), and the largest number ever inside is recorded.
    concurrency, count = 4, 12
    state = {"inside": 0, "most": 0}
    changed = threading.Condition()

    def responder(body):
        with changed:
            state["inside"] += 1
            state["most"] = max(state["most"], state["inside"])
            changed.notify_all()
            # a guard against hanging forever on a broken client, not a budget: a correct one passes at once
            changed.wait_for(lambda: state["most"] >= concurrency, timeout=300)
        time.sleep(0.02)  # room for an over-eager client's extra request to show up while these are held
        with changed:
            state["inside"] -= 1
        return Reply(text="ok")

    with OpenAIServer(responder=responder) as server:
        results = make_client(server, concurrency=concurrency).complete_many([MESSAGES] * count)
    assert all(isinstance(result, ChatResult) for result in results)
    assert state["most"] == concurrency and server.request_count == count
