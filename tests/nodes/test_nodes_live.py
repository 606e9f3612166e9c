"""Knot Forcing Live node: the graph's model, codec and reference go live, the link reaches the node, cancel ends
everything (stream, server, recording) cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import av
import pytest

from knot_core.demo import DEMO_PORTRAIT_SEED
from knot_core.errors import InputError
from nodes import NODE_CLASS_MAPPINGS
from nodes.host import RenderInterrupted
from nodes.live_nodes import EVENT_LIVE
from nodes.types import KnotSettings, Reference

pytest.importorskip("aiortc", reason="the live node needs aiortc (requirements.txt)")
aiohttp = pytest.importorskip("aiohttp", reason="the live node needs aiohttp (requirements.txt)")

N = NODE_CLASS_MAPPINGS


def wait_for_link(host, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, data in host.events:
            if name == EVENT_LIVE:
                return data
        time.sleep(0.05)
    raise AssertionError("the node sent no live link")


async def watch(ws_url: str, seconds: float) -> tuple[int, list[dict]]:
    frames, texts = 0, []
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        end = time.monotonic() + seconds
        while True:
            try:
                msg = await ws.receive(timeout=max(0.1, end - time.monotonic()))
            except asyncio.TimeoutError:
                if time.monotonic() > end and texts and texts[-1]["type"] == "end":
                    break
                if time.monotonic() > end + 15:
                    break
                continue
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames += msg.data.startswith(b'{"type":"frame"')
            elif msg.type == aiohttp.WSMsgType.TEXT:
                texts.append(json.loads(msg.data))
            else:
                break
    return frames, texts


def test_live_node_serves_the_graphs_model_and_cancel_ends_it_cleanly(models_dir, recording_host):
    model, codec, reference, _ = N["KnotForcingDemoModel"]().load(DEMO_PORTRAIT_SEED)
    outcome = {}

    def run() -> None:
        try:
            outcome["result"] = N["KnotForcingLive"]().run(model, codec, reference, 0, 0.8, 0, 0.0, True,
                                                           "KnotForcing/live", KnotSettings(), unique_id="9")
        except BaseException as err:  # noqa: BLE001 - handed to the test
            outcome["error"] = err

    node = threading.Thread(target=run)
    node.start()
    link = wait_for_link(recording_host)
    assert link["node"] == "9" and link["url"].startswith("http://127.0.0.1:")
    assert link["ws"] == link["url"].replace("http://", "ws://") + "ws"
    viewer = threading.Thread(target=lambda: outcome.setdefault("seen", asyncio.run(watch(link["ws"], 2.0))))
    viewer.start()
    time.sleep(2.5)
    recording_host.interrupt()  # the user cancels the prompt
    node.join(20)
    viewer.join(20)
    assert not node.is_alive() and isinstance(outcome.get("error"), RenderInterrupted)
    frames, texts = outcome["seen"]
    assert frames > 10 and texts[-1]["type"] == "end"  # the client is told, then the socket closes
    assert not [t for t in threading.enumerate() if t.name.startswith(("knot-live", "knot-live-server"))]
    recordings = list(Path(os.environ["KNOTFORCING_OUTPUT_DIR"]).glob("KnotForcing/live*.mp4"))
    assert len(recordings) == 1
    with av.open(str(recordings[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) > 25  # playable, with what was streamed
        assert container.streams.audio


def test_live_node_names_a_missing_reference():
    model, codec, _, _ = N["KnotForcingDemoModel"]().load(DEMO_PORTRAIT_SEED)
    with pytest.raises(InputError, match="reference"):
        N["KnotForcingLive"]().run(model, codec, Reference(None, 64, 64), 0, 0.8, 0, 0.0, False, "x")
