"""What the sampler reports per chunk: progress, a websocket event, kept frames; and how the render ended.

The event `knotforcing.chunk` carries a few small base64 JPEG frames of the chunk and its place
in the stream; web/knotforcing.js plays them inside the sampler node. `knotforcing.done` always
ends a render, finished, cancelled or failed, with the file and its frame count, so the node never
stays on a stale chunk. Both go only to the client that queued the prompt (host.send). Frames are
kept for the IMAGE output only when the whole video fits under the node's max_image_frames.
"""

from __future__ import annotations

import base64
import time

import numpy as np
import torch
from torch import Tensor

from .host import StandaloneHost

EVENT_CHUNK = "knotforcing.chunk"
EVENT_DONE = "knotforcing.done"
EVENT_MAX_SIDE = 256  # pixels: small enough for ~10 KB per frame
EVENT_MAX_FRAMES = 16  # per chunk; longer chunks are subsampled
JPEG_QUALITY = 70


def jpeg_base64(frame: np.ndarray, max_side: int = EVENT_MAX_SIDE) -> str:
    """RGB uint8 [H, W, 3] -> base64 JPEG, downscaled so the longer side is at most max_side."""
    import cv2  # only when a render reports; keeps the pack's import cheap

    h, w = frame.shape[:2]
    scale = min(1.0, max_side / max(h, w))
    if scale < 1.0:
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(frame[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a preview frame")
    return base64.b64encode(data.tobytes()).decode("ascii")


class ChunkReporter:
    """The on_chunk sink of a render: progress bar, websocket event, and (short videos) the frames."""

    def __init__(self, host: StandaloneHost, node_id: str | None, *, chunks: int, fps: float, knot_len: int,
                 keep_frames: bool) -> None:
        self.host, self.node_id, self.fps, self.knot_len = host, node_id, fps, knot_len
        self.progress = host.progress(chunks, node_id)
        self.chunks, self.done, self.frames = chunks, 0, 0  # frames: handed over, so already in the file
        self.kept: list[Tensor] | None = [] if keep_frames else None
        self.last: Tensor | None = None
        self.started = time.perf_counter()

    def __call__(self, piece) -> None:
        frames = piece.frames  # (T, H, W, 3) uint8
        if frames.shape[0] == 0:
            return
        self.done += 1
        self.frames += int(frames.shape[0])
        self.last = frames[-1:]
        if self.kept is not None:
            self.kept.append(frames)
        rgb = frames.numpy()
        pick = np.linspace(0, len(rgb) - 1, min(len(rgb), EVENT_MAX_FRAMES)).round().astype(int)
        elapsed = time.perf_counter() - self.started
        self.host.send(EVENT_CHUNK, {
            "node": self.node_id, "chunk": piece.status.chunk_index, "chunks": self.chunks,
            "first_frame": piece.first_frame, "frame_count": int(frames.shape[0]),
            "knot_boundary": piece.first_frame if piece.status.chunk_index > 0 else None, "knot_len": self.knot_len,
            "ref_index": piece.status.ref_index, "video_fps": self.fps,
            "fps": round((piece.first_frame + frames.shape[0]) / elapsed, 2) if elapsed > 0 else 0.0,
            "preview_stride": float(len(rgb)) / len(pick),
            "frames": [jpeg_base64(rgb[i]) for i in pick],
        })
        self.progress.update(self.done, rgb[-1])  # after the event: ComfyUI's progress hook may raise the interrupt

    def finish(self, filename: str, subfolder: str, ended: str, frames: int | None = None) -> None:
        """The done event: ended is 'done', 'cancelled' or 'failed'; frames default to those written so far."""
        frames = self.frames if frames is None else frames
        shown = f"{subfolder}/{filename}" if subfolder else filename
        text = f"done: {frames} frames in {shown}" if ended == "done" else f"{ended} — {frames} frames kept in {shown}"
        self.host.send(EVENT_DONE, {"node": self.node_id, "filename": filename, "subfolder": subfolder,
                                    "type": "output", "frames": frames, "ended": ended,
                                    "interrupted": ended != "done", "text": text})

    def images(self) -> Tensor:
        """IMAGE [T, H, W, 3] float 0..1: every frame when kept, else the last frame only."""
        chosen = torch.cat(self.kept) if self.kept else self.last
        if chosen is None:
            return torch.zeros(1, 64, 64, 3)
        return chosen.float() / 255.0
