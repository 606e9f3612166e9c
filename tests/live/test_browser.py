"""The live page in a real headless Chromium: a fake microphone plays the bundled speech, WebRTC carries it to the
server and the video back; the mouth measured in the frames the browser received follows the speech.

Skips when no chromium is installed (apt-get install chromium) or aiortc/aiohttp are missing.
"""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pytest

from .browser import Chromium, find_chromium

pytest.importorskip("aiortc", reason="the live server needs aiortc (requirements.txt)")
pytest.importorskip("aiohttp", reason="the live server needs aiohttp (requirements.txt)")
if find_chromium() is None:
    pytest.skip("no chromium on this machine (apt-get install chromium) for the live page test",
                allow_module_level=True)

from knot_core.demo import DEMO_SPEECH  # noqa: E402
from knot_core.live.demo import DemoLiveOptions, demo_live_stream  # noqa: E402
from knot_core.live.server import ServerThread  # noqa: E402

from .test_stream import STILL, mouth_box  # noqa: E402

SECONDS = 10.0  # the fake microphone loops the 6 s clip
MIN_BROWSER_CORRELATION = 0.45  # the demo test's bound for the same measure (mouth darkness vs driving)
VIDEO_CLOCK = 90000 // 25  # RTP ticks per frame


def aligned_correlation(samples: list[dict], mouth_by_clock: dict[int, float], first_clock: int,
                        shifts=range(-3, 4)) -> tuple[float, int]:
    """r(browser mouth darkness, driving mouth) with frames placed by RTP time from the first frame sent; the best
    of a few frames' shift (a first frame the browser's decoder never showed moves the start), and that shift."""
    rtp = np.array([s["rtp"] for s in samples], np.int64)
    slot = first_clock + np.round(((rtp - rtp[0]) % 2**32) / VIDEO_CLOCK).astype(int)
    dark = np.array([s["dark"] for s in samples])
    best = (-1.0, 0)
    for shift in shifts:
        pairs = [(d, mouth_by_clock[c + shift]) for d, c in zip(dark, slot) if c + shift in mouth_by_clock]
        d, m = np.array(pairs).T
        best = max(best, (float(np.corrcoef(d, m)[0, 1]), shift))
    return best


def test_the_page_streams_a_mouth_that_follows_the_fake_microphone(tmp_path):
    thread = ServerThread("127.0.0.1", 0)
    stream = demo_live_stream(DemoLiveOptions(motion_amount=STILL.motion_amount)).start()
    url = thread.add(stream)
    record = stream.subscribe(maxlen=10000)
    x0, y0, x1, y1 = mouth_box()

    async def run():
        async with Chromium(f"{url}?measure={x0},{y0},{x1},{y1}", DEMO_SPEECH, tmp_path / "profile") as page:
            await page.wait_for("typeof knotStart === 'function'")
            await page.evaluate("knotStart()")
            await page.wait_for("window.knotState.frames > 0", timeout=30)
            await asyncio.sleep(SECONDS)
            result = json.loads(await page.evaluate(
                "JSON.stringify({state: window.knotState, samples: window.knotSamples, "
                "shown: document.getElementById('stats').textContent})"))
            peer = thread.server.entries[stream.id].peers[0]
            await page.evaluate("location.href = 'about:blank'")  # closing the page closes its connection
            return result, peer

    try:
        result, peer = asyncio.run(run())
        deadline = time.monotonic() + 10
        while thread.server.entries[stream.id].peers and time.monotonic() < deadline:
            time.sleep(0.1)
        released = not thread.server.entries[stream.id].peers
    finally:
        stream.stop()
        thread.close()
    chunks = []
    while (chunk := record.get(timeout=0.1)) is not None:
        chunks.append(chunk)
    mouth_by_clock = {int(c): float(m) for chunk in chunks for c, m in zip(chunk.clock, chunk.mouth)}
    state, samples = result["state"], result["samples"]
    assert state["connected"] and state["driver"] and state["error"] is None
    assert len(samples) > 20 * SECONDS  # frames kept arriving at ~25 fps
    assert "latency" in result["shown"] and "fps" in result["shown"]
    assert max(mouth_by_clock.values()) > 0.5  # the microphone's speech reached the driving
    r, shift = aligned_correlation(samples, mouth_by_clock, peer.video.first_clock)
    r0, _ = aligned_correlation(samples, mouth_by_clock, peer.video.first_clock, shifts=[0])
    print(f"browser: {len(samples)} frames, mouth darkness vs driving r = {r:.3f} (shift {shift} frames; "
          f"unshifted {r0:.3f}), "
          f"page showed: {result['shown']!r}")
    assert r > MIN_BROWSER_CORRELATION, f"mouth darkness in the browser's frames vs the driving: r = {r:.3f}"
    assert released  # the server freed the viewer when the page went away
