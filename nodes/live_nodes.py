"""Knot Forcing Live: the graph's model, codec, reference and settings as a live stream (knot_core.live), served on
127.0.0.1 with its page link shown in the node, until the prompt is cancelled (or `minutes` pass)."""

from __future__ import annotations

import time

from knot_core.errors import InputError

from .host import host
from .types import CATEGORY, KNOT_MODEL, KNOT_REFERENCE, KNOT_SETTINGS, KNOT_VAE, KnotSettings

EVENT_LIVE = "knotforcing.live"  # {"node", "url", "ws"}: the page link, shown in the node by web/knotforcing.js
POLL_S = 0.2


class KnotForcingLive:
    DESCRIPTION = ("Runs the model live: open the link shown in the node, and your microphone drives the portrait "
                   "(video and audio back over WebRTC); programs drive it over the WebSocket API. Runs until you "
                   "cancel the prompt (or for 'minutes'). Served on this machine only (127.0.0.1). Needs aiortc.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("recording",)
    OUTPUT_TOOLTIPS = ("Path of the MP4 recording (empty when record is off).",)
    OUTPUT_NODE = True
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": (KNOT_MODEL, {"tooltip": "A model driven by the 'motion' signal (the Demo Model) or by none."}),
            "vae": (KNOT_VAE, {"tooltip": "Its VAE / codec: decodes each chunk as it is made."}),
            "reference": (KNOT_REFERENCE, {"tooltip": "The portrait that comes alive (Encode Reference)."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                             "tooltip": "Seeds the noise and head motion."}),
            "motion_amount": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.05,
                                        "tooltip": "Idle head motion of the demo model; 0 = still head."}),
            "port": ("INT", {"default": 8390, "min": 0, "max": 65535,
                             "tooltip": "Port of the live page on 127.0.0.1 (0 = any free port)."}),
            "minutes": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1440.0, "step": 1.0,
                                  "tooltip": "Stop after this long; 0 = until the prompt is cancelled."}),
            "record": ("BOOLEAN", {"default": False, "tooltip": "Also write what is streamed to an MP4 as it goes."}),
            "filename_prefix": ("STRING", {"default": "KnotForcing/live",
                                           "tooltip": "Recording name, relative to ComfyUI's output folder."}),
        }, "optional": {
            "settings": (KNOT_SETTINGS, {"tooltip": "Knot Settings / Running Ahead; unconnected = the model's."}),
        }, "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, model, vae, reference, seed: int, motion_amount: float, port: int, minutes: float, record: bool,
            filename_prefix: str, settings: KnotSettings | None = None, unique_id: str | None = None):
        from knot_core.engine.stream import StreamInputs
        from knot_core.live.driving import live_driving
        from knot_core.live.server import ServerThread
        from knot_core.live.stream import LiveSettings, LiveStream

        if reference is None or reference.latent is None:
            raise InputError("reference: connect Encode Reference (a portrait photo) or the Demo Model's reference")
        h = host()
        cfg = (settings or KnotSettings()).resolve(model.info.stream_config())
        inputs = StreamInputs(reference.latent_size, reference.latent, keep_mask=reference.keep_mask)
        driving = live_driving(model.model, seed=seed, motion_amount=motion_amount, fps=model.info.sampler.fps)
        stream = LiveStream(model.model, cfg, inputs, vae, driving,
                            LiveSettings(fps=model.info.sampler.fps, seed=seed, threads=model.threads))
        path = h.output_file(filename_prefix, "mp4")[0] if record else None
        summary = _serve(h, stream, ServerThread("127.0.0.1", port), path, minutes, unique_id)
        if h.interrupted():
            h.raise_if_interrupted()
        return {"ui": {"text": [summary]}, "result": (str(path or ""),)}


def _serve(h, stream, server, path, minutes: float, node: str | None) -> str:
    """Serve the stream until cancel / minutes / a failure; everything is stopped and closed on the way out."""
    from knot_core.live.recorder import LiveRecorder

    recorder = None
    try:
        recorder = LiveRecorder(stream, path) if path is not None else None
        url = server.add(stream.start())
        h.send(EVENT_LIVE, {"node": node, "url": url, "ws": url.replace("http://", "ws://") + "ws"})
        end = time.monotonic() + 60 * minutes if minutes > 0 else None
        while not h.interrupted() and stream.running and (end is None or time.monotonic() < end):
            time.sleep(POLL_S)
    finally:
        stream.stop()
        server.close()
        if recorder is not None:
            recorder.close()  # the file holds every chunk streamed
    if stream.error is not None:
        raise InputError(f"the live stream failed: {stream.error}")
    s = stream.summary()
    return (f"live stream ended: {s['frames']} frames, {s['skipped_frames']} skipped, {s['input_s']:.1f} s of audio "
            f"in" + (f"; recorded {recorder.frames_written} frames to {path}" if recorder is not None else ""))
