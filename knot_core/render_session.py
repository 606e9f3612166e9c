"""The loaded side of a render job: model, VAE, reference latent, driving signals, audio, length, resume files.

`open_session(job)` turns a checked `RenderJob` into tensors and modules (what `render` streams from);
`RenderSession.begin` starts the stream fresh or from a resume state, and `save` writes that state: one
safetensors file holding the StreamState (state.py's format, so `StreamState.load` reads it as is), the
decoder's causal cache under `decoder.` and, in the metadata, the frames written and a job fingerprint.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .config import StreamConfig
from .dit import KnotDiT
from .engine.state import StreamState
from .engine.stream import StreamInputs, start_stream
from .errors import ConfigError, InputError
from .vae import StreamingDecoder, WanVAE
from .video_writer import AAC_SAMPLE_RATES, OutputError, VideoWriter

log = logging.getLogger(__name__)

SEGMENT_KEY = "writer.segment"  # uint8 [t, H, W, 3]: frames since the writer's last encoder restart
MUX_SAMPLE_RATE = 48_000  # audio at a rate AAC cannot store is resampled to this for muxing


@dataclass
class RenderSession:
    job: Any  # RenderJob
    model: KnotDiT
    vae: WanVAE
    cfg: StreamConfig
    inputs: StreamInputs
    fps: int
    num_frames: int
    audio: Tensor | None  # (C, N) float32 to mux
    sample_rate: int | None
    fingerprint: dict
    start_chunk: int = 0

    def begin(self, state_file: Path) -> tuple[VideoWriter, StreamState, StreamingDecoder]:
        """A writer, stream state and decoder: fresh, or restored from state_file when the job resumes."""
        job = self.job
        state = start_stream(self.model, self.cfg, self.inputs, seed=job.seed)
        decoder = self.vae.streaming_decoder()
        options = {"audio": self.audio, "sample_rate": self.sample_rate, "crf": job.crf}
        if not job.resume:
            return VideoWriter(job.out, self.fps, overwrite=job.overwrite, **options), state, decoder
        frames, segment = self._load(state_file, state, decoder)
        self.start_chunk = state.chunk_index
        log.info("resuming %s at chunk %d, frame %d", job.out, state.chunk_index, frames)
        return VideoWriter.reopen(job.out, self.fps, frames=frames, segment=segment, **options), state, decoder

    def save(self, state_file: Path, state: StreamState, decoder: StreamingDecoder, frames_written: int,
             segment: np.ndarray | None = None) -> None:
        """Stream + decoder state after `frames_written` frames, and the writer's current encoder segment
        (VideoWriter.segment_frames: what a resume encodes again to match the uninterrupted file), replaced
        atomically."""
        from safetensors import SafetensorError

        from .render import RESUME_FORMAT

        extra = {} if segment is None else {SEGMENT_KEY: torch.from_numpy(np.ascontiguousarray(segment))}
        try:
            state.save(state_file, self.cfg,
                       extra_tensors=extra | {f"decoder.{k}": v.detach().cpu().contiguous()
                                              for k, v in decoder.state_tensors().items()},
                       extra_metadata={"render": json.dumps({"format": RESUME_FORMAT, "frames_written": frames_written,
                                                             "job": self.fingerprint})})
        except (OSError, SafetensorError) as err:
            raise OutputError(f"cannot save the resume state {str(state_file)!r} ({err}); {self.job.out} holds "
                              f"{frames_written} frames and is playable. Free disk space or choose another "
                              "location") from err
        log.debug("saved resume state at frame %d to %s", frames_written, state_file)

    def _load(self, state_file: Path, state: StreamState, decoder: StreamingDecoder) -> tuple[int, np.ndarray | None]:
        from safetensors import safe_open

        try:
            with safe_open(str(state_file), "pt") as f:
                render = json.loads((f.metadata() or {}).get("render", "null"))
                decoder_tensors = {k[8:]: f.get_tensor(k) for k in f.keys() if k.startswith("decoder.")}
                segment = f.get_tensor(SEGMENT_KEY).numpy() if SEGMENT_KEY in f.keys() else None
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
            raise InputError(f"cannot read resume state {str(state_file)!r}: {err}") from err
        from .render import RESUME_FORMAT

        if not isinstance(render, dict) or render.get("format") != RESUME_FORMAT:
            raise InputError(f"{str(state_file)!r} is not a resume state of this version; render again with "
                             "--overwrite")
        saved = render["job"]
        if saved != self.fingerprint:
            diff = {k: (saved.get(k), v) for k, v in self.fingerprint.items() if saved.get(k) != v}
            raise InputError(f"cannot resume {str(self.job.out)!r}: the job differs from the interrupted one "
                             f"(saved, now): {diff}; resume with the same inputs and settings")
        state.load(state_file, self.cfg)
        decoder.load_state_tensors(decoder_tensors)
        frames = int(render["frames_written"])
        assert decoder.frames_decoded == frames, (decoder.frames_decoded, frames)
        return frames, segment


def open_session(job) -> RenderSession:
    """Load everything a checked job names; the length and every input mismatch are settled here."""
    from .checkpoints import check_text, load_dit, load_text_embedding
    from .compilation import check_compile, compile_model
    from .image import resolution_for
    from .pipeline import encode_reference
    from .render import fingerprint
    from .vae import load_vae

    device = job.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = job.dtype or ("bf16" if str(device).startswith("cuda") else "fp32")
    check_compile(job.compile, device)
    model, info = load_dit(job.model, dtype=dtype, device=device)
    compile_model(model, job.compile)
    cfg = info.stream_config(**job.settings)
    fps = int(job.fps or info.sampler.fps)
    image = read_image(job.reference)  # (H, W, 3) uint8
    if job.height is not None:
        height, width = job.height, job.width
    else:
        area = info.sampler.resolution[0] * info.sampler.resolution[1]
        height, width = resolution_for(image.shape[0], image.shape[1], max_area=area)
    vae = load_vae(job.vae, dtype=model.patch_embedding.weight.dtype, device=device)
    reference = encode_reference(vae, image, height, width, job.fit)  # (1, 16, 1, h, w)
    text = None
    if job.text is not None:
        text = load_text_embedding(job.text, text_dim=info.config.text_dim, max_len=info.config.text_len)
    text = check_text(info, text)
    signals, lengths = driving_signals(job, model, fps, device)
    audio, sample_rate = None, None
    if job.audio is not None:
        audio, sample_rate = mux_audio(job.audio)
        lengths.append(audio.shape[1] * fps // sample_rate)
    num_frames = length_in_frames(job, fps, lengths)
    inputs = StreamInputs((height // 8, width // 8), reference=reference, text=text, signals=tuple(signals))
    log.info("%s: %dx%d @ %d fps, %d frames, %s on %s, %s", job.name, width, height, fps, num_frames, dtype,
             device, cfg)
    return RenderSession(job, model, vae, cfg, inputs, fps, num_frames, audio, sample_rate,
                         fingerprint(job, cfg, fps, (height, width), dtype))


def length_in_frames(job, fps: int, signal_frames: list[int]) -> int:
    if job.frames is not None:
        return job.frames
    if job.seconds is not None:
        return max(1, round(job.seconds * fps))
    if not signal_frames:
        raise ConfigError("no length given: pass --frames or --seconds, or a driving input (--audio, --pose, "
                          "--expression) whose end ends the video")
    return max(1, min(signal_frames))


def driving_signals(job, model: KnotDiT, fps: int, device: str) -> tuple[list, list[int]]:
    """Signals for the model's driving adapters, and the video length (frames) of each input given."""
    wanted = {adapter.signal for adapter in model.driving.values()}
    signals, lengths = [], []
    for name, path in (("pose", job.pose), ("expression", job.expression)):
        if path is not None and name not in wanted:
            raise InputError(f"--{name} was given but this model has no {name} adapter (it is driven by "
                             f"{sorted(wanted) or 'nothing'}); leave --{name} out or use a {name}-driven model")
    # 'continue': the last chunk's knot frames may look one chunk past the input's end (never output)
    if job.pose is not None:
        from .signals import PoseSignal, load_openpose_folder

        signals.append(PoseSignal(load_openpose_folder(job.pose), fps, end_policy="continue"))
    if job.expression is not None:
        from .signals import ExpressionSignal, load_expression

        signals.append(ExpressionSignal(load_expression(job.expression), fps, end_policy="continue"))
    lengths += [s.num_frames for s in signals]
    if "audio" in wanted and job.audio is not None:
        if job.wav2vec is None:
            raise InputError("this model is driven by speech: give --wav2vec PATH, a local wav2vec2-base-960h "
                             "folder (or its model.safetensors); nothing is downloaded")
        from .signals import AudioSignal, Wav2Vec2Features, load_wav2vec2

        features = Wav2Vec2Features(load_wav2vec2(job.wav2vec, device=device))
        signals.append(AudioSignal.from_file(job.audio, features, fps=fps, end_policy="continue"))
    return signals, lengths


def mux_audio(path: Path) -> tuple[Tensor, int]:
    """The driving audio as the MP4 will carry it: (C <= 2, N) at a rate AAC stores."""
    from .audio import load_audio, resample

    wave, rate = load_audio(path)  # (C, N)
    if wave.shape[0] > 2:
        wave = wave.mean(dim=0, keepdim=True)
    if rate not in AAC_SAMPLE_RATES:
        wave, rate = resample(wave, rate, MUX_SAMPLE_RATE), MUX_SAMPLE_RATE
    return wave.clamp(-1.0, 1.0), rate


def read_image(path: Path) -> np.ndarray:
    """A photo file -> (H, W, 3) uint8 RGB (any format OpenCV reads; alpha dropped, grey expanded)."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InputError(f"reference {str(path)!r} is not a readable image; give a PNG, JPEG or WebP photo")
    if image.shape[0] < 16 or image.shape[1] < 16 or not math.isfinite(float(image.mean())):
        raise InputError(f"reference {str(path)!r} is {image.shape[1]}x{image.shape[0]}; need at least 16x16")
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
