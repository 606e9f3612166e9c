"""The host adapter's ComfyUI services: events to the queuing client only, the progress bar without an image.

The server and the progress bar here are small recorders with the exact call signatures of ComfyUI's
`PromptServer.send_sync(event, data, sid)` and `ProgressBar.update_absolute(value, total, preview)`;
the real ones are driven in tests/workflows/test_comfyui_host.py.
"""

from __future__ import annotations

import numpy as np

from nodes.host import Progress, send_to_client


class _Server:
    def __init__(self, client_id):
        self.client_id, self.sent = client_id, []

    def send_sync(self, event, data, sid=None):
        self.sent.append((event, data, sid))


def test_events_go_to_the_client_that_queued_the_prompt_only():
    server = _Server("alice")
    send_to_client(server, "knotforcing.chunk", {"chunk": 0})
    assert server.sent == [("knotforcing.chunk", {"chunk": 0}, "alice")]  # sid set: never a broadcast (sid=None)
    nobody = _Server(None)  # a prompt queued without a client id: nobody to show it to
    send_to_client(nobody, "knotforcing.done", {})
    assert nobody.sent == []
    send_to_client(None, "knotforcing.done", {})  # no server (a script): nothing, no error


class _Bar:
    def __init__(self):
        self.calls = []

    def update_absolute(self, value, total=None, preview=None):
        self.calls.append((value, total, preview))


def test_the_host_progress_bar_gets_no_preview_image():
    """Our widget plays the chunks; a host preview would double it and then hide the finished video."""
    bar = _Bar()
    progress = Progress(3, "5", bar)
    progress.update(1, np.zeros((64, 64, 3), np.uint8))
    progress.update(2)
    assert bar.calls == [(1, 3, None), (2, 3, None)] and progress.updates == [1, 2]
