"""The page's live mode in headless chromium against the real server: chromium's fake microphone plays a generated
file (`--use-file-for-fake-audio-capture`), the page streams it over the WebSocket, and the sound's label shows up
in the live tags and events.

Set AST_AUDIO_SAVE_SCREENSHOT=1 to also write the live view to docs/images/live.png (the README's picture).
"""

from __future__ import annotations

import os

import pytest

from ast_audio.infer.live import StreamingTagger
from ast_audio.infer.tagger import Tagger
from ast_audio.weights.checkpoint import load_model
from helpers import CHROMIUM, WAIT_MS, known_sound
from serve_helpers import ROOT, run_server, save_tiny_checkpoint

pytestmark = pytest.mark.browser

HOP_S = 0.5


@pytest.mark.slow
def test_live_mode_shows_the_known_sound(tmp_path):
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `apt-get install chromium` (setup.sh does this)")
    from playwright.sync_api import sync_playwright

    ckpt = save_tiny_checkpoint(tmp_path / "model")
    sound = known_sound(tmp_path / "mic.wav")
    hops = [h for h in StreamingTagger(Tagger(load_model(ckpt)), 48000, window_s=None, hop_s=HOP_S).run([sound])
            if h.scores is not None]
    expected = {h.top(1)[0][0] for h in hops}
    assert len(expected) == 1, expected  # the sound's label: the same in every window
    label = expected.pop()
    assert max(float(h.scores.max()) for h in hops) > 0.5  # above the page's default event threshold

    with run_server(ckpt) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                  f"--use-file-for-fake-audio-capture={tmp_path / 'mic.wav'}"])
        try:
            context = browser.new_context(permissions=["microphone"], viewport={"width": 1000, "height": 900})
            page = context.new_page()
            problems: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(server.url + "/")
            page.click("details summary")  # the options
            page.fill("#hop_s", str(HOP_S))
            page.click("#live-toggle")
            page.wait_for_selector("#live[data-state=listening]", timeout=WAIT_MS)
            page.wait_for_function("() => Number(document.getElementById('live').dataset.hops || 0) >= 6",
                                   timeout=WAIT_MS)
            assert page.locator("#live-tags li .label").first.inner_text() == label
            assert f"{label}: from" in page.inner_text("#live-events")  # its event is going on
            assert page.get_attribute("#live-timeline", "data-drawn") == "true"
            assert label in page.get_attribute("#live-timeline", "aria-label")
            assert "Listening:" in page.inner_text("#live-status")
            if os.environ.get("AST_AUDIO_SAVE_SCREENSHOT"):  # a longer stretch of the scrolling timeline
                page.wait_for_function("() => Number(document.getElementById('live').dataset.hops) >= 30",
                                       timeout=WAIT_MS)
                page.locator("#live").screenshot(path=str(ROOT / "docs" / "images" / "live.png"))
            page.click("#live-toggle")
            page.wait_for_selector("#live[data-state=idle]", timeout=WAIT_MS)
            assert "Stopped after" in page.inner_text("#live-status")
            assert f"{label}: " in page.inner_text("#live-events")  # closed by the end of the stream
            assert problems == []
        finally:
            browser.close()
    assert "Traceback" not in server.output(), server.output()
