"""The live server's WebSocket API and routes, with real clients over real sockets: frames and audio arrive paced,
bad input gets a clear message to its own client only, one driver at a time, streams never mix, stops are clean."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="the live server needs aiohttp (requirements.txt)")
pytest.importorskip("aiortc", reason="the live server needs aiortc (requirements.txt)")

import aiohttp  # noqa: E402

from knot_core.demo import DEMO_SIZE  # noqa: E402
from knot_core.live.demo import DemoLiveOptions, demo_live_stream  # noqa: E402
from knot_core.live.protocol import decode_binary  # noqa: E402
from knot_core.live.server import ServerThread  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TONE = (0.3 * np.sin(np.arange(320) * 2 * np.pi * 200 / 16000) * 32767).astype("<i2").tobytes()  # 20 ms


@pytest.fixture
def served():
    """A server on a free port of 127.0.0.1 with two demo streams (two different portraits)."""
    thread = ServerThread("127.0.0.1", 0)
    streams = [demo_live_stream(DemoLiveOptions(portrait_seed=seed)).start() for seed in (2026, 7)]
    urls = [thread.add(s) for s in streams]
    yield thread, streams, urls
    for s in streams:
        s.stop()
    thread.close()


def ws_url(page: str) -> str:
    return page.replace("http://", "ws://") + "ws"


async def receive(ws, seconds: float) -> tuple[list, list, list]:
    """(frame headers + images, audio headers, text messages) received for `seconds`."""
    frames, audio, texts = [], [], []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except asyncio.TimeoutError:
            break
        if msg.type == aiohttp.WSMsgType.BINARY:
            header, payload = decode_binary(msg.data)
            if header["type"] == "frame":
                frames.append((header, cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)))
            else:
                audio.append((header, payload))
        elif msg.type == aiohttp.WSMsgType.TEXT:
            texts.append(json.loads(msg.data))
        else:
            break
    return frames, audio, texts


async def push(ws, seconds: float) -> None:
    """20 ms of tone at a time, at the pace it plays."""
    t0 = time.monotonic()
    for i in range(int(seconds / 0.02)):
        await ws.send_bytes(TONE)
        await asyncio.sleep(max(0.0, t0 + 0.02 * (i + 1) - time.monotonic()))


def test_a_program_pushes_audio_and_receives_paced_frames_with_audio(served):
    thread, streams, urls = served

    async def run():
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(urls[0])) as ws:
            hello = await ws.receive_json()
            pushing = asyncio.create_task(push(ws, 2.5))
            frames, audio, texts = await receive(ws, 3.0)
            await pushing
            return hello, frames, audio, texts

    hello, frames, audio, texts = asyncio.run(run())
    assert hello == {"type": "hello", "stream": streams[0].id, "fps": 25, "width": DEMO_SIZE, "height": DEMO_SIZE,
                     "audio": {"format": "s16le", "sample_rate": 16000, "channels": 1},
                     "delay_s": streams[0].delay_s}
    assert texts == []
    assert 40 <= len(frames) <= 80  # ~3 s at 25 fps, less the start-up delay
    assert all(img.shape == (DEMO_SIZE, DEMO_SIZE, 3) for _, img in frames)
    index = [h["index"] for h, _ in frames]
    assert index == list(range(index[0], index[0] + len(index)))
    shown = [h["input_sample"] for h, _ in frames if h["input_sample"] >= 0]
    assert len(shown) > 25 and shown == sorted(shown)  # the pushed tone reached the frames, in order
    assert max(h["mouth"] for h, _ in frames) > 0.5  # and opened the mouth
    assert audio and all(len(p) == 2 * h["samples"] for h, p in audio)


def test_garbage_and_unusable_formats_get_a_clear_message_and_break_nothing(served):
    thread, streams, urls = served

    async def run():
        async with aiohttp.ClientSession() as session:
            bad = await session.ws_connect(ws_url(urls[0]))
            good = await session.ws_connect(ws_url(urls[0]))
            await bad.receive_json()
            await good.receive_json()
            replies = []
            for message in ("hello?", '{"type": "dance"}', "[1, 2]"):
                await bad.send_str(message)
                replies.append(await next_text(bad))
            await bad.send_bytes(b"\x01\x02\x03")  # not whole 16-bit samples
            replies.append(await next_text(bad))
            await bad.send_str(json.dumps({"type": "format", "format": "f32le", "sample_rate": 44100, "channels": 2}))
            replies.append(await next_text(bad))
            await bad.send_bytes(TONE)  # refused until a usable format is declared
            replies.append(await next_text(bad))
            await bad.send_str(json.dumps({"type": "format", "format": "s16le", "sample_rate": 16000,
                                           "channels": 1}))  # usable: accepted silently
            await bad.send_bytes(os.urandom(40000 * 2))  # too long for one message
            replies.append(await next_text(bad))
            await bad.send_str('{"type": "stats"}')
            stats = await next_text(bad, "stats")
            frames, _, texts = await receive(good, 2.0)
            still, _, _ = await receive(bad, 0.5)  # the bad client still receives the stream
            await bad.close()
            await good.close()
            return replies, stats, frames, texts, still

    replies, stats, frames, texts, still = asyncio.run(run())
    assert [r["type"] for r in replies] == ["error"] * 7
    messages = [r["message"] for r in replies]
    assert "not JSON" in messages[0] and "unknown message type 'dance'" in messages[1]
    assert "unknown message type 'list'" in messages[2]
    assert "not whole 16-bit samples" in messages[3] and "s16le" in messages[3]
    assert "'f32le'" in messages[4] and "16000" in messages[4] and "ffmpeg" in messages[4]
    assert "audio ignored" in messages[5]
    assert "longer than 1 s" in messages[6]
    assert stats["stream"] == streams[0].id and stats["running"]
    assert len(frames) >= 20 and texts == [] and still  # the other client saw nothing of it
    assert streams[0].running and streams[0].error is None


async def next_text(ws, kind: str = "error") -> dict:
    while True:
        msg = await ws.receive(timeout=5)
        if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
            return json.loads(msg.data)


def test_two_clients_one_driver_and_a_client_that_drops_mid_stream(served):
    thread, streams, urls = served

    async def run():
        async with aiohttp.ClientSession() as session:
            a = await session.ws_connect(ws_url(urls[0]))
            b = await session.ws_connect(ws_url(urls[0]))
            await a.receive_json()
            await b.receive_json()
            await a.send_bytes(TONE)  # a drives
            await asyncio.sleep(0.1)
            await b.send_bytes(TONE)
            refused = await next_text(b)
            # a vanishes mid-stream without a closing handshake (a network drop)
            a._response.connection.transport.abort()
            await asyncio.sleep(0.5)
            await b.send_bytes(TONE)  # b can drive now
            frames, _, texts = await receive(b, 1.5)
            await b.close()
            return refused, frames, texts

    refused, frames, texts = asyncio.run(run())
    assert "another client drives this stream" in refused["message"]
    assert not any(t["type"] == "error" for t in texts)  # b's audio was taken after a left
    assert len(frames) >= 30 and streams[0].running
    deadline = time.monotonic() + 5
    while streams[0].subscribers and time.monotonic() < deadline:  # every client's queue was released
        time.sleep(0.1)
    assert streams[0].subscribers == 0


def test_one_stream_never_reaches_another_streams_client(served):
    thread, streams, urls = served

    async def run():
        async with aiohttp.ClientSession() as session:
            one = await session.ws_connect(ws_url(urls[0]))
            two = await session.ws_connect(ws_url(urls[1]))
            hellos = [await one.receive_json(), await two.receive_json()]
            pushing = asyncio.create_task(push(one, 2.0))
            got_one, got_two = await asyncio.gather(receive(one, 2.5), receive(two, 2.5))
            await pushing
            async with session.get(urls[0].replace(streams[0].id, "not-a-stream")) as missing:
                status = missing.status
            await one.close()
            await two.close()
            return hellos, got_one[0], got_two[0], status

    hellos, frames_one, frames_two, status = asyncio.run(run())
    assert [h["stream"] for h in hellos] == [s.id for s in streams]
    assert max(h["input_sample"] for h, _ in frames_one) >= 0
    assert all(h["input_sample"] == -1 for h, _ in frames_two)  # stream 1's audio never drove stream 2
    a, b = np.mean([f for _, f in frames_one], 0), np.mean([f for _, f in frames_two], 0)
    assert np.abs(a - b).mean() > 20  # two different portraits: each client got its own
    assert status == 404


def test_a_bad_webrtc_offer_is_answered_with_the_reason(served):
    thread, streams, urls = served

    async def run():
        async with aiohttp.ClientSession() as session:
            async with session.post(urls[0] + "offer", data="not json") as r1:
                one = (r1.status, await r1.json())
            async with session.post(urls[0] + "offer", json={"sdp": "v=0 nonsense", "type": "offer"}) as r2:
                two = (r2.status, await r2.json())
            async with session.post(urls[0] + "bye", data="not-a-peer") as r3:
                assert r3.status == 404  # a goodbye for no peer of this stream closes nothing
            return one, two

    (s1, j1), (s2, j2) = asyncio.run(run())
    assert s1 == 400 and "bad WebRTC offer" in j1["error"]
    assert s2 == 400 and "bad WebRTC offer" in j2["error"]
    assert streams[0].running and not thread.server.entries[streams[0].id].peers


@contextlib.contextmanager
def _launched_from_a_background_script():
    """A child started now inherits SIGINT ignored, as under `cmd &` or nohup (Python then installs no
    KeyboardInterrupt for it). Set in this process around the start: a preexec_fn is unsafe with threads."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("stop, launch", [(signal.SIGINT, contextlib.nullcontext),
                                          (signal.SIGINT, _launched_from_a_background_script),
                                          (signal.SIGTERM, contextlib.nullcontext)],
                         ids=["ctrl-c", "ctrl-c-nohup", "sigterm"])
def test_the_live_command_serves_on_localhost_and_ctrl_c_stops_it_cleanly(tmp_path, stop, launch):
    out = tmp_path / "live.mp4"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with launch():
        proc = subprocess.Popen([sys.executable, "-m", "knot_core", "live", "--port", "0", "--record", str(out)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("live: open http://127.0.0.1:"), line
        url = line.split()[2]

        async def view():
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(url)) as ws:
                frames, _, _ = await receive(ws, 2.0)
                return len(frames)

        assert asyncio.run(view()) > 10
        proc.send_signal(stop)
        stdout, stderr = proc.communicate(timeout=30)  # about 3 s
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    assert "stopping (Ctrl-C or SIGTERM)" in stdout and "recorded" in stdout and "Traceback" not in stderr
    import av

    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 25  # playable, holds what was streamed


def test_a_port_in_use_is_named_with_the_fix(tmp_path):
    import socket
    import threading

    from knot_core.errors import InputError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        before = threading.active_count()
        with pytest.raises(InputError, match=f"cannot listen on 127.0.0.1:{port}.*choose another port"):
            ServerThread("127.0.0.1", port)
        assert threading.active_count() == before  # its loop thread is gone too
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        run = subprocess.run([sys.executable, "-m", "knot_core", "live", "--port", str(port), "--seconds", "1"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr and "choose another port" in run.stderr
