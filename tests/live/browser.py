"""A headless Chromium driven over the DevTools protocol (a websocket; aiohttp's client), for the live page test.

Debian's `chromium` package is enough (no downloaded browser builds): started with a fake microphone that plays a
WAV file, the fake-UI flag that grants it, and a free remote-debugging port read from its stderr.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    return None


class Chromium:
    """`async with Chromium(url, wav, profile) as page: await page.evaluate("...")`."""

    def __init__(self, url: str, wav: Path, profile: Path) -> None:
        self.args = [find_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
                     "--disable-features=WebRtcHideLocalIpsWithMdns", "--remote-debugging-port=0",
                     f"--user-data-dir={profile}", "--no-first-run", url]
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> Chromium:
        import aiohttp

        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        endpoint = await asyncio.to_thread(self._devtools_endpoint)
        self.session = aiohttp.ClientSession()
        port = re.search(r":(\d+)/", endpoint).group(1)
        deadline = time.monotonic() + 20
        while True:
            async with self.session.get(f"http://127.0.0.1:{port}/json") as reply:
                pages = [t for t in await reply.json() if t["type"] == "page"]
            if pages or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    def _devtools_endpoint(self) -> str:
        for line in self.proc.stderr:
            if "DevTools listening on" in line:
                return line.split()[-1]
        raise RuntimeError(f"chromium exited ({self.proc.wait()}) without a DevTools endpoint")

    async def evaluate(self, expression: str, timeout: float = 30.0):
        """The value of a JavaScript expression (promises awaited), as JSON."""
        call = next(self._ids)
        await self.ws.send_json({"id": call, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}})
        while True:
            message = json.loads((await self.ws.receive(timeout=timeout)).data)
            if message.get("id") == call:
                result = message["result"]
                if "exceptionDetails" in result:
                    raise RuntimeError(f"page error: {result['exceptionDetails']}")
                return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30.0) -> None:
        """Poll until a JavaScript expression is true (e.g. the page's script has loaded)."""
        deadline = time.monotonic() + timeout
        while not await self.evaluate(f"Boolean({expression})"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{expression} did not become true in {timeout} s")
            await asyncio.sleep(0.1)

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
