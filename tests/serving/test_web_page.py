"""The web chat page end to end in a real headless Chromium: upload an image, ask, read the streamed answer.

Chromium is driven through the DevTools protocol over `--remote-debugging-pipe` (NUL-separated JSON messages on the
browser's file descriptors 3 and 4), so the test needs no driver package. Needs Debian's `chromium`
(`apt-get install -y chromium`); skipped with that hint when it is absent.
"""

import json
import os
import shutil
import subprocess
import time

import pytest
from serving_helpers import tiny  # noqa: F401  (fixture)

from conftest import make_image
from llava_hf.serving.generate import answer, user_message
from llava_hf.serving.loading import SamplingArguments
from llava_hf.serving.server import ServeArguments, ServerThread

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium chromium-driver"),
]


class DevTools:
    """A headless Chromium and a blocking DevTools-protocol connection to one page."""

    def __init__(self, user_data_dir):
        to_browser_read, self.to_browser = os.pipe()
        self.from_browser, from_browser_write = os.pipe()
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={user_data_dir}"]
        # The shell moves the pipes from stdin/stdout to fds 3/4, where --remote-debugging-pipe expects them.
        self.process = subprocess.Popen(
            [
                "sh",
                "-c",
                'exec "$@" 3<&0 4>&1 </dev/null >/dev/null',
                "sh",
                CHROMIUM,
                *flags,
                "--remote-debugging-pipe",
            ],
            stdin=to_browser_read,
            stdout=from_browser_write,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self.buffer:
                chunk = os.read(self.from_browser, 65536)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str):
        target = self.call("Target.createTarget", url=url)["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Until the page has loaded, its elements do not exist yet: count that as "not yet".
            if value := self.evaluate(
                f"(() => {{ try {{ return {expression}; }} catch (error) {{ return null; }} }})()"
            ):
                return value
            time.sleep(0.05)
        raise TimeoutError(f"{expression} stayed false for {timeout} s; page status: {self.evaluate(STATUS)!r}")

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self.to_browser)
        os.close(self.from_browser)


STATUS = "document.getElementById('status').textContent"


def ask(browser: DevTools, question: str) -> str:
    """Type a question, send it, wait for the streamed answer to finish; returns the answer shown."""
    browser.evaluate(
        "window.textUpdates = 0;"
        "new MutationObserver(() => window.textUpdates++)"
        ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});"
        f"document.getElementById('question').value = {json.dumps(question)};"
        "document.getElementById('send').click();"
    )
    browser.wait_for("document.body.dataset.state === 'done' || document.body.dataset.state === 'error'")
    assert browser.evaluate("document.body.dataset.state") == "done", browser.evaluate(STATUS)
    return browser.evaluate("[...document.querySelectorAll('.assistant')].pop().textContent")


def test_web_page_upload_ask_and_stream(tiny, tmp_path):  # noqa: F811
    model, processor = tiny
    image = make_image(5)
    image.save(tmp_path / "photo.png")
    settings = ServeArguments(port=0, max_output_tokens=64)
    with ServerThread(model, processor, settings, "tiny-llava") as url:
        browser = DevTools(tmp_path / "chromium-profile")
        try:
            browser.open(url + "/")
            browser.wait_for("document.getElementById('model-name').textContent === 'tiny-llava'")
            browser.evaluate("document.getElementById('max-tokens').value = 12")
            file_input = browser.call(
                "DOM.querySelector", nodeId=browser.call("DOM.getDocument")["root"]["nodeId"], selector="#image"
            )["nodeId"]
            browser.call("DOM.setFileInputFiles", files=[str(tmp_path / "photo.png")], nodeId=file_input)
            browser.wait_for("document.body.dataset.state === 'ready'")

            first = ask(browser, "What is in this picture?")
            assert browser.evaluate("window.textUpdates") > 3  # the answer arrived in pieces, not at once
            second = ask(browser, "Tell me more.")
        finally:
            browser.close()

    sampling = SamplingArguments(max_new_tokens=12, temperature=0.0)
    history = [user_message("What is in this picture?", with_image=True)]
    expected_first = answer(model, processor, history, [image], sampling)
    history += [{"role": "assistant", "content": expected_first}, user_message("Tell me more.", with_image=False)]
    assert first.strip() == expected_first
    assert second.strip() == answer(model, processor, history, [image], sampling)
