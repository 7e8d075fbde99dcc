"""The web chat page end to end in a real headless Chromium: upload an image, ask, read the streamed answer twice.

Driven by Selenium with Debian's `chromium` and `chromium-driver` (`apt-get install -y chromium chromium-driver`;
.ci/run installs them). Without them the test is skipped with that hint, except under CI (CI=1 or .ci/run), where it
fails: there it must run.
"""

import os
import shutil
import signal

import pytest

from helpers.serving import tiny  # noqa: F401  (fixture)
from llava_hf.serving.generate_command import answer, user_message
from llava_hf.serving.inference import SamplingArguments
from llava_hf.serving.server import ServeArguments, ServerThread
from llava_hf.testing import make_image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
FLAGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        (CHROMIUM is None or CHROMEDRIVER is None) and not os.environ.get("CI"),
        reason="needs Chromium: apt-get install -y chromium chromium-driver",
    ),
]


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        try:
            os.killpg(service.process.pid, signal.SIGKILL)  # chromedriver's session: anything quit() left behind
        except ProcessLookupError:
            pass


def ask(browser, question: str) -> str:
    """Type a question, send it, wait for the streamed answer to finish; returns the answer shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.execute_script(
        "window.textUpdates = 0;"  # counts DOM changes, not observer callbacks (which batch changes made together)
        "new MutationObserver((records) => { window.textUpdates += records.length; })"
        ".observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});"
    )
    browser.find_element(By.ID, "question").send_keys(question)
    browser.find_element(By.ID, "send").click()
    state = "return document.body.dataset.state"
    WebDriverWait(browser, 120).until(lambda page: page.execute_script(state) in ("done", "error"))
    assert browser.execute_script(state) == "done", browser.find_element(By.ID, "status").text
    return browser.execute_script("return [...document.querySelectorAll('.assistant')].pop().textContent")


def test_web_page_upload_ask_and_stream(browser, tiny, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model, processor = tiny
    image = make_image(5)
    image.save(tmp_path / "photo.png")
    settings = ServeArguments(port=0, max_output_tokens=64)
    with ServerThread(model, processor, settings, "tiny-llava") as url:
        browser.get(url + "/")
        WebDriverWait(browser, 60).until(lambda page: page.find_element(By.ID, "model-name").text == "tiny-llava")
        browser.execute_script("document.getElementById('max-tokens').value = 12")
        browser.find_element(By.ID, "image").send_keys(str(tmp_path / "photo.png"))
        WebDriverWait(browser, 60).until(
            lambda page: page.execute_script("return document.body.dataset.state") == "ready"
        )

        first = ask(browser, "What is in this picture?")
        assert browser.execute_script("return window.textUpdates") > 3  # the answer was drawn delta by delta
        second = ask(browser, "Tell me more.")

    sampling = SamplingArguments(max_new_tokens=12, temperature=0.0)
    history = [user_message("What is in this picture?", with_image=True)]
    expected_first = answer(model, processor, history, [image], sampling)
    history += [{"role": "assistant", "content": expected_first}, user_message("Tell me more.", with_image=False)]
    assert first.strip() == expected_first
    assert second.strip() == answer(model, processor, history, [image], sampling)
