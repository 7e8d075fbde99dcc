"""Load on the real `llava-hf serve` subprocess: concurrent `openai` clients with malformed payloads mixed in.

Every good request must get its exact greedy answer, every bad one its 4xx, the server must stay up, batch
concurrent requests together, and its resident memory must stay flat across rounds.
"""

import http.client
import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import openai

from helpers.serving import (  # noqa: F401  (fixtures)
    checkpoint,
    data_url,
    image_message,
    png_bytes,
    reference_answer,
    rss_bytes,
    start_server,
    stop_server,
    tiny,
)

GOOD = [("What is it?", 1), ("Describe it.", 2), ("Hi", None), ("Colours?", 3)]
CLIENTS = 16
MAX_TOKENS = 8
ROUNDS = 3  # measured rounds after warm-up, each CLIENTS good + 8 malformed requests at once


def malformed_requests() -> list[tuple[str, bytes, int]]:
    """(content type, body, expected status) for payloads a careless or hostile client sends."""

    def with_url(url: str) -> bytes:
        part = {"type": "image_url", "image_url": {"url": url}}
        return json.dumps({"messages": [{"role": "user", "content": [part, {"type": "text", "text": "?"}]}]}).encode()

    return [
        ("application/json", with_url(data_url(png_bytes(0, size=(160, 160)))), 413),  # ~77 KB > 60 KB
        ("application/json", with_url("data:image/png;base64,%%%%"), 400),
        ("text/plain", json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), 415),
        ("application/json", json.dumps({"messages": [image_message("hi")], "max_tokens": 10**12}).encode(), 400),
        ("application/json", with_url(data_url(b"GIF89a garbage")), 400),
        ("application/json", b'{"messages": [', 400),
        ("application/json", with_url("http://10.0.0.1/admin.png"), 400),
        ("application/x-www-form-urlencoded", b"messages=hi", 415),
    ]


def post_raw(base_url: str, content_type: str, body: bytes) -> int:
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": content_type})
    status = connection.getresponse().status
    connection.close()
    return status


def ask(client: openai.OpenAI, question: str, seed, stream: bool) -> str:
    message = image_message(question, seed) if seed is not None else {"role": "user", "content": question}
    kwargs = dict(model="tiny", messages=[message], max_tokens=MAX_TOKENS, temperature=0)
    if stream:
        chunks = client.chat.completions.create(**kwargs, stream=True)
        return "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return client.chat.completions.create(**kwargs).choices[0].message.content


def test_concurrent_clients_with_malformed_payloads(checkpoint, tiny, tmp_path):  # noqa: F811
    expected = {question: reference_answer(*tiny, question, seed, MAX_TOKENS) for question, seed in GOOD}
    process, base_url = start_server(
        checkpoint,
        *("--served_model_name", "tiny", "--max_batch_size", "8", "--batch_wait_ms", "20"),
        *("--max_image_bytes", "60000", "--max_output_tokens", "32"),
        log_path=tmp_path / "server.log",
    )
    client = openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    bad = malformed_requests()

    def one_round(pool) -> None:
        good = [pool.submit(ask, client, *GOOD[i % len(GOOD)], stream=i % 2 == 1) for i in range(CLIENTS)]
        malformed = [pool.submit(post_raw, base_url, *request[:2]) for request in bad]
        for index, future in enumerate(good):
            question = GOOD[index % len(GOOD)][0]
            assert future.result().rstrip() == expected[question], f"client {index}"
        assert [future.result() for future in malformed] == [status for *_, status in bad]

    try:
        with ThreadPoolExecutor(max_workers=CLIENTS + len(bad)) as pool:
            one_round(pool)  # warm-up: first-use allocations (thread arenas, tokenizer caches) happen here
            one_round(pool)
            baseline = rss_bytes(process.pid)
            for _ in range(ROUNDS):
                one_round(pool)
            grown = rss_bytes(process.pid) - baseline
        assert grown < 20 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {ROUNDS} rounds"
        assert process.poll() is None, "the server died"
        health = json.loads(http_get(base_url + "/health"))
        assert health["status"] == "ok" and health["in_flight"] == 0
        assert health["largest_recent_batch"] > 1, "concurrent requests were never batched"
        assert health["batches_run"] < (ROUNDS + 2) * CLIENTS  # fewer generate calls than good requests
    finally:
        stop_server(process)


def http_get(url: str) -> str:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    connection.request("GET", parsed.path)
    body = connection.getresponse().read().decode()
    connection.close()
    return body
