"""Live stream figures over N minutes of live input, through the real server and WebSocket API (demo model).

A client pushes the bundled speech (looped) as a microphone would, 20 ms at a time at the pace it plays, and
receives the paced frames and audio. Prints:
- glass-to-glass latency p50 / p95: a pushed audio sample -> the frame showing it arrives at the client
  (frames are sent when due, so arrival is display; a browser adds its jitter buffer, ~10-20 ms on localhost);
- sustained fps (frames received per second, each minute and overall), frames skipped by the stream;
- memory (this process's RSS: server, stream and client) at the start, the end and its peak;
- audio/video offset at the start and the end: arrival of a chunk's audio minus arrival of the frame that
  starts at the same clock slot (mean over the first and the last 10 s).

    python bench/live_latency.py --minutes 10
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from knot_core.demo import DEMO_SPEECH  # noqa: E402
from knot_core.errors import run_script  # noqa: E402
from knot_core.live.demo import demo_live_stream  # noqa: E402
from knot_core.live.protocol import decode_binary, pcm_to_bytes  # noqa: E402
from knot_core.live.server import ServerThread  # noqa: E402
from knot_core.motion import decode_audio  # noqa: E402

PIECE = 320  # 20 ms at 16 kHz


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run(url: str, seconds: float) -> dict:
    import aiohttp

    speech, _ = decode_audio(DEMO_SPEECH)
    sent: list[float] = []  # send time of each pushed piece
    frames: list[tuple[float, dict]] = []
    audio: dict[int, float] = {}  # clock slot -> arrival of the chunk audio starting there
    memory: list[tuple[float, float]] = []
    t0 = time.monotonic()

    async def push(ws) -> None:
        i = 0
        while (now := time.monotonic()) < t0 + seconds:
            start = (i * PIECE) % (len(speech) - PIECE)
            sent.append(now)
            await ws.send_bytes(pcm_to_bytes(speech[start : start + PIECE]))
            i += 1
            await asyncio.sleep(max(0.0, t0 + i * PIECE / 16000 - time.monotonic()))

    async def watch_memory() -> None:
        while time.monotonic() < t0 + seconds:
            memory.append((time.monotonic() - t0, rss_mib()))
            await asyncio.sleep(10)

    async with aiohttp.ClientSession() as session, session.ws_connect(url.replace("http", "ws") + "ws") as ws:
        await ws.receive_json()
        tasks = [asyncio.create_task(push(ws)), asyncio.create_task(watch_memory())]
        while time.monotonic() < t0 + seconds + 1.5:
            try:
                msg = await ws.receive(timeout=1.0)
            except asyncio.TimeoutError:
                continue
            if msg.type != aiohttp.WSMsgType.BINARY:
                continue
            header, _ = decode_binary(msg.data)
            now = time.monotonic()
            if header["type"] == "frame":
                frames.append((now, header))
            else:
                audio[header["clock"]] = now
        await asyncio.gather(*tasks)
    return {"sent": sent, "frames": frames, "audio": audio, "memory": memory, "t0": t0}


def report(data: dict, seconds: float, summary: dict) -> None:
    t0, sent, frames = data["t0"], data["sent"], data["frames"]
    latency = np.array([t - sent[h["input_sample"] // PIECE] for t, h in frames if h["input_sample"] >= 0])
    times = np.array([t - t0 for t, _ in frames])
    print(f"live bench: {seconds / 60:.1f} min of live input, {len(frames)} frames received")
    print(f"glass-to-glass (sample pushed -> frame showing it received): p50 {1000 * np.median(latency):.0f} ms, "
          f"p95 {1000 * np.percentile(latency, 95):.0f} ms, max {1000 * latency.max():.0f} ms "
          f"({latency.size} frames; stream delay_s {summary['delay_s']} s)")
    per_min = [int(((times >= m * 60) & (times < (m + 1) * 60)).sum()) / 60 for m in range(int(seconds // 60))]
    steady = times[times > 2.0]
    print(f"sustained fps: {(steady.size - 1) / (steady[-1] - steady[0]):.2f} overall; per minute "
          f"{', '.join(f'{f:.2f}' for f in per_min) or '-'}; skipped {summary['skipped_frames']} frames in "
          f"{summary['late_chunks']} late chunks; worst chunk {1000 * summary['chunk_s_max']:.0f} ms")
    memory = data["memory"]
    minute = next((m for t, m in memory if t >= 60), memory[-1][1])
    print(f"memory (RSS, server + stream + client): start {memory[0][1]:.0f} MiB, after 1 min {minute:.0f} MiB, "
          f"end {memory[-1][1]:.0f} MiB, peak {max(m for _, m in memory):.0f} MiB")
    offsets = [(data["audio"][h["clock"]] - t, t - t0) for t, h in frames if h["clock"] in data["audio"]]
    first = [o for o, t in offsets if t < offsets[0][1] + 10]
    last = [o for o, t in offsets if t > offsets[-1][1] - 10]
    print(f"A/V offset (chunk audio arrival - its first frame's arrival): start {1000 * np.mean(first):+.1f} ms, "
          f"end {1000 * np.mean(last):+.1f} ms")
    print(f"input: {summary['input_s']:.1f} s pushed, {summary['dropped_flood_s']:.2f} s dropped (flood), "
          f"{summary['silence_s']:.2f} s silence filled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    seconds = 60 * args.minutes
    thread = ServerThread("127.0.0.1", 0)
    stream = demo_live_stream().start()
    url = thread.add(stream)
    try:
        data = asyncio.run(run(url, seconds))
        summary = stream.summary()
    finally:
        stream.stop()
        thread.close()
    report(data, seconds, summary)


if __name__ == "__main__":
    run_script(main)
