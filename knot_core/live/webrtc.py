"""The page's WebRTC peer (aiortc): the browser's microphone drives the stream, its video and audio come back.

Each peer holds two tracks, each with its own subscription to the stream, paced by the frames' due times:
video frames (scaled to VIEW_SIZE, pts = clock slot at 90 kHz) and 20 ms audio frames (16 kHz s16 mono, pts
in samples of the same clock), so the browser's lip sync sees one clock. The microphone track is resampled
to 16 kHz mono and pushed into the stream while this peer is the driver. A peer whose connection fails or
closes (page closed, network gone) is closed and unsubscribed; the stream runs on for the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
import secrets
import time

import cv2
import numpy as np

log = logging.getLogger(__name__)

AUDIO_PTIME = 0.02  # seconds per audio frame, as WebRTC (Opus) packs them
TIMECODE_BITS = 16  # a measuring page (tests, latency checks) asks for the clock slot drawn under the picture


def with_timecode(image: np.ndarray, clock: int) -> np.ndarray:
    """(S, S, 3) -> (S + S/16, S, 3): a strip of 16 black/white blocks under the picture: the clock's low 15 bits
    (LSB first) and a set top bit, so a black frame (no strip) never reads as a clock; blocks large enough to
    survive video compression."""
    size = image.shape[1]
    block = size // TIMECODE_BITS
    code = (clock & 0x7FFF) | 0x8000
    bits = (code >> np.arange(TIMECODE_BITS)) & 1  # (16,)
    strip = np.repeat(np.repeat(bits * 255, block)[None, :, None], block, axis=0).astype(np.uint8)  # (block, S, 1)
    return np.concatenate([image, np.repeat(strip, 3, axis=2)], axis=0)


class _ChunkReader:
    """The next chunk of a subscription, awaited without blocking the loop."""

    def __init__(self, stream) -> None:
        self.loop, self.wake = asyncio.get_running_loop(), asyncio.Event()
        self.stream = stream
        self.sub = stream.subscribe(notify=lambda: self.loop.call_soon_threadsafe(self.wake.set))

    async def next(self):
        while True:
            chunk = self.sub.get(timeout=0)
            if chunk is not None or self.sub.closed:
                return chunk
            await self.wake.wait()
            self.wake.clear()

    def close(self) -> None:
        self.stream.unsubscribe(self.sub)


def _tracks(stream, view_size: int, timecode: bool):
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError
    from av import AudioFrame, VideoFrame

    fps, rate = stream.settings.fps, stream.settings.sample_rate

    class LiveVideoTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self.reader, self.chunk, self.j = _ChunkReader(stream), None, 0

        async def recv(self):
            if self.chunk is None or self.j >= self.chunk.frames.shape[0]:
                self.chunk, self.j = await self.reader.next(), 0
                if self.chunk is None:
                    self.stop()
                    raise MediaStreamError
            chunk, j = self.chunk, self.j
            self.j += 1
            await asyncio.sleep(max(0.0, float(chunk.due[j]) - time.monotonic()))
            image = cv2.resize(chunk.frames[j], (view_size, view_size), interpolation=cv2.INTER_LINEAR)
            if timecode:
                image = with_timecode(image, int(chunk.clock[j]))
            frame = VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = int(chunk.clock[j]) * (90000 // fps), fractions.Fraction(1, 90000)
            return frame

        def stop(self) -> None:
            self.reader.close()
            super().stop()

    class LiveAudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self) -> None:
            super().__init__()
            self.reader, self.chunk, self.at = _ChunkReader(stream), None, 0
            self.piece = int(AUDIO_PTIME * rate)

        async def recv(self):
            if self.chunk is None or self.at >= self.chunk.audio.shape[0]:
                self.chunk, self.at = await self.reader.next(), 0
                if self.chunk is None:
                    self.stop()
                    raise MediaStreamError
            chunk, at = self.chunk, self.at
            self.at += self.piece
            await asyncio.sleep(max(0.0, float(chunk.due[0]) + at / rate - time.monotonic()))
            samples = np.zeros(self.piece, np.float32)
            part = chunk.audio[at : at + self.piece]
            samples[: part.shape[0]] = part
            pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)[None]  # (1, piece) packed s16 mono
            frame = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate, frame.time_base = rate, fractions.Fraction(1, rate)
            frame.pts = int(chunk.clock[0]) * (rate // fps) + at
            return frame

        def stop(self) -> None:
            self.reader.close()
            super().stop()

    return LiveVideoTrack(), LiveAudioTrack()


class Peer:
    """One browser connection to one stream."""

    def __init__(self, entry, pc, video, audio) -> None:
        self.entry, self.pc, self.video, self.audio = entry, pc, video, audio
        self.token = secrets.token_urlsafe(12)  # the page says goodbye with it (POST .../bye)
        self.mic_task: asyncio.Task | None = None
        self.closed = False

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.entry.release(self)
        if self.mic_task is not None:
            self.mic_task.cancel()
        self.video.stop()
        self.audio.stop()
        with contextlib.suppress(Exception):
            await self.pc.close()
        if self in self.entry.peers:
            self.entry.peers.remove(self)


async def _pump_microphone(peer: Peer, track) -> None:
    """Browser audio (48 kHz Opus, decoded) -> 16 kHz mono float -> the stream, while this peer drives it."""
    import av
    from aiortc.mediastreams import MediaStreamError

    resampler = av.AudioResampler(format="flt", layout="mono", rate=peer.entry.stream.settings.sample_rate)
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        if not peer.entry.claim(peer):
            continue
        for out in resampler.resample(frame):
            peer.entry.stream.push_audio(out.to_ndarray().reshape(-1))


async def answer_offer(entry, params: dict, view_size: int = 256) -> dict:
    """Answer the page's offer: our video + audio out, its microphone in ("timecode": true adds the clock strip)."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    if params.get("type") != "offer" or not isinstance(params.get("sdp"), str):
        raise ValueError(f"got type={params.get('type')!r} and {'an' if 'sdp' in params else 'no'} sdp")
    pc = RTCPeerConnection()
    video, audio = _tracks(entry.stream, view_size, bool(params.get("timecode")))
    peer = Peer(entry, pc, video, audio)
    entry.peers.append(peer)

    @pc.on("track")
    def on_track(track) -> None:
        if track.kind == "audio":
            peer.mic_task = asyncio.ensure_future(_pump_microphone(peer, track))

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed", "disconnected"):
            log.info("peer of stream %s: %s", entry.stream.id[:6], pc.connectionState)
            await peer.close()

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=params["sdp"], type="offer"))
        pc.addTrack(video)
        pc.addTrack(audio)
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException:  # a bad SDP: this peer is dropped, the error goes to its client
        await peer.close()
        raise
    return {"sdp": pc.localDescription.sdp, "type": pc.localDescription.type,
            "driver": entry.driver is None or entry.driver is peer, "peer": peer.token}


async def close_peer(entry, token: str) -> bool:
    """The page went away (its `pagehide` beacon): close that peer now rather than at the ICE timeout (~30 s)."""
    for peer in list(entry.peers):
        if secrets.compare_digest(peer.token, token):
            await peer.close()
            return True
    return False
