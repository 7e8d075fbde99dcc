"""Hostile inputs against the real `llava-hf serve` subprocess with its default limits.

Each row: the status, the message, and that the server still answers a normal request afterwards; image rows also bound
the server's peak resident memory during the request (VmHWM, reset before each row through /proc/PID/clear_refs).
Then: clients that disconnect, streaming or not, have their batch rows cancelled and stop counting toward the limit.
The cheaper rows (deep JSON, huge numbers, split control tokens, bombs, SSRF) are in test_server.py's table.
"""

import http.client
import io
import json
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

from helpers.serving import checkpoint, data_url, start_server, stop_server, tiny  # noqa: F401  (fixtures)
from llava_hf.serving.server import ServeArguments, ServerThread
from llava_hf.testing import make_tiny_config, make_tiny_model

pytestmark = pytest.mark.slow
MiB = 2**20


@pytest.fixture(scope="module")
def server(checkpoint, tmp_path_factory):  # noqa: F811
    process, base_url = start_server(
        checkpoint, "--max_output_tokens", "16", log_path=tmp_path_factory.mktemp("hostile") / "server.log"
    )
    try:
        yield process, base_url
    finally:
        stop_server(process)


def post(base_url: str, body: bytes, timeout: float = 120) -> tuple[int, dict]:
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    connection.request("POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = json.loads(response.read())
    connection.close()
    return response.status, payload


def get(base_url: str, path: str) -> dict:
    parsed = urllib.parse.urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    connection.request("GET", path)
    payload = json.loads(connection.getresponse().read())
    connection.close()
    return payload


def image_request(width: int, height: int) -> bytes:
    """A one-colour PNG of the given size (a few KB however many pixels) with a question."""
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    part = {"type": "image_url", "image_url": {"url": data_url(buffer.getvalue())}}
    message = {"role": "user", "content": [part, {"type": "text", "text": "What is it?"}]}
    return json.dumps({"messages": [message], "max_tokens": 2}).encode()


def memory_kib(pid: int) -> dict:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


ROWS = [
    # name, body, expected status, message, peak-RSS bound over the resident size before the request (None: not checked)
    (
        "5 MB of text",
        json.dumps({"messages": [{"role": "user", "content": "word " * 1_000_000}]}).encode(),
        400,
        "characters of text, more than the",
        None,
    ),
    ("16384x64 PNG (256:1)", image_request(16384, 64), 400, "aspect ratio over 200:1", 64 * MiB),
    ("65536x256 PNG at the pixel limit", image_request(65536, 256), 400, "aspect ratio over 200:1", 64 * MiB),
    # Padded uncapped, this strip would be an 8192x8192 canvas (over 800 MiB as float32); capped at 4096, it costs about
    # what the largest accepted image does.
    ("8192x64 PNG (128:1) answered, padded side capped", image_request(8192, 64), 200, None, 384 * MiB),
    ("4096x4096 PNG at the pixel limit, answered", image_request(4096, 4096), 200, None, 512 * MiB),
]


@pytest.mark.parametrize("name, body, status, message, rss_bound", ROWS, ids=[row[0] for row in ROWS])
def test_hostile_row(server, name, body, status, message, rss_bound):
    process, base_url = server
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current size
    before = memory_kib(process.pid)["VmRSS"] * 1024
    got_status, reply = post(base_url, body)
    peak = memory_kib(process.pid)["VmHWM"] * 1024
    assert got_status == status, reply
    if message is not None:
        assert message in reply["error"]["message"]
    else:
        assert reply["choices"][0]["finish_reason"] in ("stop", "length")
    if rss_bound is not None:
        assert peak - before < rss_bound, f"peak RSS rose by {(peak - before) / MiB:.0f} MiB"
    status, reply = post(base_url, json.dumps({"messages": [{"role": "user", "content": "Hi"}]}).encode())
    assert status == 200, reply  # and the server still answers


def wait_until(condition, what: str, timeout: float = 300):
    """Poll /health-style conditions until true; the timeout only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout} s")
        time.sleep(0.02)


@pytest.mark.parametrize("stream", [False, True], ids=["non-streaming", "streaming"])
def test_clients_that_disconnect_are_cancelled(tiny, stream):  # noqa: F811
    # A long context and no EOS: every row would generate its 4000 tokens unless cancelled.
    config = make_tiny_config()
    config.text_config.max_position_embeddings = 4096
    model = make_tiny_model(config)
    processor = tiny[1]
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]
    settings = ServeArguments(
        port=0, max_concurrent_requests=10, max_batch_size=10, max_output_tokens=4000, batch_wait_ms=100
    )
    body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4000, "stream": stream}).encode()
    with ServerThread(model, processor, settings, "tiny") as base_url:
        parsed = urllib.parse.urlsplit(base_url)
        clients = []
        for _ in range(10):
            client = socket.create_connection((parsed.hostname, parsed.port), timeout=60)
            head = "POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            client.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            clients.append(client)

        def submitted(health: dict) -> bool:  # all 10 in the batcher: generating, or queued behind a first batch
            return health["in_flight"] == 10 and health["generating"] + health["queued"] == 10

        wait_until(lambda: submitted(get(base_url, "/health")), "10 requests reaching the batcher")
        for client in clients:
            client.close()
        wait_until(lambda: get(base_url, "/health")["in_flight"] == 0, "the requests ending")
        wait_until(lambda: get(base_url, "/health")["cancelled_rows"] == 10, "the rows being cancelled")
        assert get(base_url, "/health")["generating"] == 0
        # They no longer count toward --max_concurrent_requests: 10 new requests are all admitted.
        short = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}).encode()
        with ThreadPoolExecutor(max_workers=10) as pool:
            results = list(pool.map(lambda _: post(base_url, short), range(10)))
        assert [status for status, _ in results] == [200] * 10, results
