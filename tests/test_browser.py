"""The page in a real headless browser: Debian's chromium driven by Playwright, against the real server process.

Chromium must be installed (`apt-get install chromium`, done by setup.sh); a missing browser fails the test, it is
not skipped. The microphone test uses chromium's fake capture device (a beep), so MediaRecorder, the in-page WAV
conversion and the upload all run for real.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ast_audio import Tagger, load_model
from helpers import CHROMIUM, WAIT_MS
from serve_helpers import run_server, save_tiny_checkpoint, write_pattern

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("browser") / "model")


@pytest.fixture(scope="module")
def server(checkpoint):
    with run_server(checkpoint) as running:
        yield running
    assert "Traceback" not in running.output(), running.output()  # no request ended in a server error (500)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: the page is tested in a real browser; install it with "
                    "`apt-get install chromium` (as root; setup.sh does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # --no-sandbox: the tests run as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        try:
            yield launched
        finally:
            launched.close()


def open_page(browser, server):
    """A fresh page on the server, recording console errors and every URL the page asks for."""
    context = browser.new_context(permissions=["microphone"])
    page = context.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server.url + "/")
    return context, page, problems, requests


def canvas_ink(page) -> int:
    """Pixels of the timeline canvas that differ from its top-left background pixel (0 = nothing was drawn)."""
    return page.evaluate("""() => {
        const canvas = document.getElementById("timeline");
        const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
        let ink = 0;
        for (let i = 0; i < data.length; i += 4) {
            if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) ink++;
        }
        return ink;
    }""")


def check_results(page, top_label: str, top_score: float | None = None) -> None:
    page.wait_for_selector("#results[data-state=done]", timeout=WAIT_MS)
    labels = page.locator("#tags li .label").all_inner_texts()
    assert labels and labels[0] == top_label
    if top_score is not None:  # the score text and the bar's length
        assert page.inner_text("#tags li:first-child .score") == f"{top_score:.3f}"
        width = page.evaluate("() => { const bar = document.querySelector('#tags li:first-child .bar');"
                              " return bar.firstChild.getBoundingClientRect().width / bar.clientWidth; }")
        assert width == pytest.approx(top_score, abs=0.01)  # 1% of the bar: sub-pixel rounding
    assert canvas_ink(page) > 1000, "the timeline canvas is blank"
    assert page.get_attribute("#timeline", "data-drawn") == "true"
    assert page.locator("#legend span").count() >= 1
    size = page.evaluate("() => { const img = document.getElementById('explain-img');"
                         " return [img.complete, img.naturalWidth, img.naturalHeight]; }")
    assert size == [True, 1200, 600]
    assert page.is_visible("#explain-img")
    assert "Done" in page.inner_text("#status")


def check_legend_colours(page, labels: tuple[str, ...]) -> None:
    """Each legend swatch is its class's colour in the PNG timelines: tab10 by the class's index in the labels."""
    import matplotlib

    swatches = page.evaluate("() => [...document.querySelectorAll('#legend span')].map("
                             "(s) => [s.textContent, getComputedStyle(s.querySelector('i')).backgroundColor])")
    assert swatches
    for text, colour in swatches:
        index = labels.index(text.split(" (peak")[0])
        r, g, b = (round(255 * v) for v in matplotlib.colormaps["tab10"](index % 10)[:3])
        assert colour == f"rgb({r}, {g}, {b})", (text, colour)


@pytest.mark.slow
def test_upload_shows_tags_timeline_and_explanation(browser, server, checkpoint, tmp_path):
    from playwright.sync_api import expect

    clip = write_pattern(tmp_path / "pattern.wav", seconds=6.0)
    top_label, top_score = Tagger(load_model(checkpoint)).tag(str(clip), top_k=5)[0].top[0]
    context, page, problems, requests = open_page(browser, server)
    try:
        expect(page.locator("#model-info")).to_contain_text("Model with 5 labels", timeout=WAIT_MS)
        page.set_input_files("#file", str(clip))
        page.click("#analyse")
        check_results(page, top_label, top_score)
        assert "pattern.wav: 6.00 s" in page.inner_text("#tags-meta")
        check_legend_colours(page, load_model(checkpoint).labels)
        # Every event the server found is listed in the accessible table (or "no events" is said).
        rows = page.locator("#events-table tbody tr").count()
        assert rows > 0 or page.is_visible("#events-empty")
        assert "Event timeline of 6.00 s" in page.get_attribute("#timeline", "aria-label")
        assert problems == []
        assert all(url.startswith(server.url) or url.startswith("blob:") for url in requests), requests
    finally:
        context.close()


@pytest.mark.slow
def test_bad_file_shows_the_server_error(browser, server, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really audio")
    context, page, _, _ = open_page(browser, server)
    try:
        page.set_input_files("#file", str(bad))
        page.click("#analyse")
        page.wait_for_selector("#results[data-state=error]", timeout=WAIT_MS)
        assert "422" in page.inner_text("#tags-error") and "broken.wav" in page.inner_text("#tags-error")
        assert "failed" in page.inner_text("#status")
    finally:
        context.close()


@pytest.mark.slow
def test_record_with_fake_microphone(browser, server):
    context, page, problems, _ = open_page(browser, server)
    try:
        page.click("#record")
        page.wait_for_selector("#record[aria-pressed=true]", timeout=WAIT_MS)
        page.wait_for_timeout(1500)  # record about 1.5 s of the fake device's beeps
        page.click("#record")
        page.wait_for_selector("#results[data-state=done]", timeout=WAIT_MS)
        meta = page.inner_text("#tags-meta")
        assert meta.startswith("recording.wav: "), meta  # converted to WAV in the page, decoded by the server
        seconds = float(meta.split(": ")[1].split(" s")[0])
        assert 0.5 < seconds < 10.0
        assert page.locator("#tags li").count() == 5
        assert canvas_ink(page) > 1000
        assert page.evaluate("document.getElementById('explain-img').naturalWidth") == 1200
        assert problems == []
    finally:
        context.close()
