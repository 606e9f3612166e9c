"""One WebSocket client of a live stream (messages: knot_core.live.protocol).

Every problem with a client's message is answered to that client alone as {"type": "error", "message"} and
the connection stays open; the stream and its other clients never see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from ..errors import InputError
from . import protocol

log = logging.getLogger(__name__)


async def serve_websocket(request, entry, sockets: set):
    from aiohttp import WSMsgType, web

    stream = entry.stream
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=4 * 2**20)
    await ws.prepare(request)
    sockets.add(ws)
    loop, wake = asyncio.get_running_loop(), asyncio.Event()
    sub = stream.subscribe(notify=lambda: loop.call_soon_threadsafe(wake.set))
    client = object()
    await ws.send_json(_hello(stream))
    sender = asyncio.create_task(_send_chunks(ws, sub, wake, stream.settings.fps))
    usable = True
    try:
        async for msg in ws:
            try:
                if msg.type == WSMsgType.BINARY:
                    await _push(ws, entry, client, usable, msg.data)
                elif msg.type == WSMsgType.TEXT:
                    message = protocol.parse_text(msg.data)
                    if message["type"] == "stats":
                        await ws.send_json({"type": "stats", **stream.summary()})
                    else:  # a format declaration: this client's audio is ignored unless it is usable
                        usable = False
                        protocol.check_format(message)
                        usable = True
            except InputError as err:
                await ws.send_json({"type": "error", "message": str(err)})
    finally:
        entry.release(client)
        stream.unsubscribe(sub)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        sockets.discard(ws)
        await ws.close()
    return ws


def _hello(stream) -> dict:
    s = stream.settings
    h, w = (8 * n for n in stream.inputs.latent_size)
    return {"type": "hello", "stream": stream.id, "fps": s.fps, "width": w, "height": h,
            "audio": protocol.AUDIO_FORMAT, "delay_s": round(stream.delay_s, 3)}


async def _push(ws, entry, client, usable: bool, data: bytes) -> None:
    if not usable:
        raise InputError("audio ignored: this client declared an audio format the stream cannot use; send "
                         f"{json.dumps({'type': 'format', **protocol.AUDIO_FORMAT})} first")
    samples = protocol.pcm_from_bytes(data)
    if not entry.claim(client):
        raise InputError("another client drives this stream; its audio is used until it leaves (you still "
                         "receive the stream)")
    dropped = entry.stream.push_audio(samples)
    if dropped:
        await ws.send_json({"type": "dropped", "samples": dropped})


async def _send_chunks(ws, sub, wake: asyncio.Event, fps: int) -> None:
    """Each chunk's audio when it starts, each frame when it is due; 'end' when the stream ends."""
    try:
        while True:
            chunk = sub.get(timeout=0)
            if chunk is None:
                if sub.closed:
                    await ws.send_json({"type": "end", "reason": "the stream stopped"})
                    await ws.close()
                    return
                await wake.wait()
                wake.clear()
                continue
            await _send_chunk(ws, chunk, fps)
    except (ConnectionResetError, RuntimeError) as err:  # the client went away mid-send
        log.info("websocket client left: %s", err)


async def _send_chunk(ws, chunk, fps: int) -> None:
    c0 = int(chunk.clock[0])
    header = {"type": "audio", "clock": c0, "pts": c0 / fps, "samples": int(chunk.audio.shape[0])}
    await asyncio.sleep(max(0.0, float(chunk.due[0]) - time.monotonic()))
    await ws.send_bytes(protocol.encode_binary(header, protocol.pcm_to_bytes(chunk.audio)))
    for j in range(chunk.frames.shape[0]):
        await asyncio.sleep(max(0.0, float(chunk.due[j]) - time.monotonic()))
        clock = int(chunk.clock[j])
        header = {"type": "frame", "index": chunk.first_frame + j, "clock": clock, "pts": clock / fps,
                  "input_sample": int(chunk.input_sample[j]), "mouth": round(float(chunk.mouth[j]), 4)}
        await ws.send_bytes(protocol.encode_binary(header, protocol.jpeg(chunk.frames[j])))
