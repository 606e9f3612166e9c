"""The live server: a page (browser microphone in, video and audio back over WebRTC) and a WebSocket API, for any
number of live streams, each reached only through its own unguessable id.

Routes (aiohttp; aiortc for WebRTC), all under /knotforcing/live/<stream>:
  GET  .../            the page (https://... or localhost only: browsers give the microphone to secure origins)
  POST .../offer       WebRTC offer -> answer (the page's peer connection: microphone up, video + audio down)
  POST .../bye         the page is going away (body: its peer token): close its connection now
  GET  .../ws          the programmatic API (knot_core.live.protocol)
  GET  .../stats       the stream's counters as JSON
One client drives a stream (the first that sends audio, until it leaves); all of its clients view it; a
client only ever gets the stream its URL names. Binds 127.0.0.1 unless told otherwise. aiohttp and aiortc are
imported here only, so the rest of the pack works without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, KnotError
from .stream import LiveStream

log = logging.getLogger(__name__)

PAGE = Path(__file__).resolve().parent / "page.html"
ROUTE = "/knotforcing/live"
VIEW_SIZE = 256  # the WebRTC video is scaled up to this (browsers show a 96 px stream poorly)


def require_server_modules() -> None:
    """aiohttp and aiortc, or an install hint."""
    missing = []
    for name in ("aiohttp", "aiortc"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise KnotError(f"the live server needs {' and '.join(missing)}: pip install aiortc aiohttp "
                        "(both are in requirements.txt)")


@dataclass
class StreamEntry:
    stream: LiveStream
    driver: object | None = None  # the client whose audio drives the stream
    peers: list = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self, client: object) -> bool:
        with self.lock:
            if self.driver is None:
                self.driver = client
            return self.driver is client

    def release(self, client: object) -> None:
        with self.lock:
            if self.driver is client:
                self.driver = None


class LiveServer:
    """Hosts live streams; `start()` / `close()` inside an asyncio loop (or use ServerThread)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8390) -> None:
        require_server_modules()
        self.host, self.port = host, port
        self.entries: dict[str, StreamEntry] = {}
        self._runner = None
        self._sockets: set = set()

    def add(self, stream: LiveStream) -> str:
        """Serve a started stream; returns its page URL."""
        self.entries[stream.id] = StreamEntry(stream)
        return self.url(stream)

    def url(self, stream: LiveStream) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}{ROUTE}/{stream.id}/"

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get(f"{ROUTE}/{{stream}}/", self._page)
        app.router.add_post(f"{ROUTE}/{{stream}}/offer", self._offer)
        app.router.add_post(f"{ROUTE}/{{stream}}/bye", self._bye)
        app.router.add_get(f"{ROUTE}/{{stream}}/ws", self._websocket)
        app.router.add_get(f"{ROUTE}/{{stream}}/stats", self._stats)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as err:
            await self._runner.cleanup()
            raise InputError(f"cannot listen on {self.host}:{self.port} ({err.strerror or err}); choose another "
                             "port (--port, or 0 for any free one)") from None
        self.port = self._runner.addresses[0][1]  # the real port when 0 was asked for

    async def close(self) -> None:
        """Close every peer and socket (their clients get an 'end' message), then the listener."""
        for entry in self.entries.values():
            for peer in list(entry.peers):
                await peer.close()
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "end", "reason": "the server is shutting down"})
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def _entry(self, request) -> StreamEntry:
        from aiohttp import web

        entry = self.entries.get(request.match_info["stream"])
        if entry is None:
            raise web.HTTPNotFound(text="no such live stream; use the link the stream printed")
        return entry

    async def _page(self, request):
        from aiohttp import web

        self._entry(request)
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    async def _stats(self, request):
        from aiohttp import web

        entry = self._entry(request)
        return web.json_response({**entry.stream.summary(), "peers": len(entry.peers)})

    async def _websocket(self, request):
        from .websocket_api import serve_websocket

        return await serve_websocket(request, self._entry(request), self._sockets)

    async def _bye(self, request):
        from aiohttp import web

        from .webrtc import close_peer

        closed = await close_peer(self._entry(request), (await request.text()).strip())
        return web.Response(status=204 if closed else 404)

    async def _offer(self, request):
        from aiohttp import web

        from .webrtc import answer_offer

        entry = self._entry(request)
        try:
            params = await request.json()
            return web.json_response(await answer_offer(entry, params))
        except (ValueError, KeyError, TypeError, InputError) as err:
            return web.json_response({"error": f"bad WebRTC offer: {err}; POST JSON {{'sdp': ..., 'type': "
                                               "'offer'}} as RTCPeerConnection.createOffer() makes it"}, status=400)


class ServerThread:
    """A LiveServer on its own asyncio loop in a background thread (the ComfyUI node, tests, the bench)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.server = LiveServer(host, port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="knot-live-server", daemon=True)
        self._thread.start()
        try:
            self.call(self.server.start())
        except BaseException:
            self._stop_loop()
            raise

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def add(self, stream: LiveStream) -> str:
        return self.server.add(stream)

    def close(self) -> None:
        try:
            self.call(self.server.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


async def serve_forever(server: LiveServer, streams: list[LiveStream], seconds: float | None = None,
                        on_ready: Callable[[], None] | None = None) -> None:
    """Serve started streams until Ctrl-C (or `seconds`, or a stream fails), then stop everything cleanly."""
    await server.start()
    for stream in streams:
        server.add(stream)
    if on_ready is not None:
        on_ready()
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if any(s.error is not None for s in streams):
                break
    finally:
        for stream in streams:
            stream.stop()
        await server.close()
