"""Loading a render job's files: model, VAE, reference, driving signals and audio -> a prepared RenderPlan.

`load_job(job)` is the file front ends' half of the render path (the node's half is its sockets): it
loads what a checked `RenderJob` names and hands it to `render_path.prepare`, which runs the checks and
the length rule every front end shares. `read_image` reads the photo; the audio to mux comes from
`audio.load_audio` + `audio.audio_for_mux`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .dit import KnotDiT
from .engine.stream import StreamInputs
from .errors import InputError
from .file_sink import FileOutput
from .render_job import RenderJob, fingerprint
from .render_path import RenderPlan, prepare
from .render_plan import Length

log = logging.getLogger(__name__)


def load_job(job: RenderJob, *, progress: bool = False) -> tuple[RenderPlan, FileOutput]:
    """Load everything a checked job names and prepare it; the length and every input mismatch are settled here."""
    from .audio import audio_for_mux, load_audio
    from .checkpoints import check_text, load_dit, load_text_embedding
    from .compilation import check_compile, compile_model
    from .reference_crop import frame_reference, reference_size
    from .render_size import check_render_size
    from .vae import load_codec

    device = job.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = job.dtype or ("bf16" if str(device).startswith("cuda") else "fp32")
    check_compile(job.compile, device)
    image = read_image(job.reference)  # (1, H, W, 3) in 0..1, as a ComfyUI IMAGE
    model, info = load_dit(job.model, dtype=dtype, device=device, loop=job.loop)
    compile_model(model, job.compile)
    cfg = info.stream_config().with_settings(job.settings)
    fps = int(job.fps or info.sampler.fps)
    height, width = reference_size(image.shape[1], image.shape[2], info.sampler.resolution, job.height or 0,
                                   job.width or 0)
    vae = load_codec(job.vae, dtype=model.patch_embedding.weight.dtype, device=device)
    check_render_size(info.config, cfg, (height, width), info.sampler.resolution, vae, device,
                      model.patch_embedding.weight.element_size())
    reference, _ = frame_reference(vae, image, height, width, job.fit)  # (1, 16, 1, h, w)
    text = None
    if job.text is not None:
        text = load_text_embedding(job.text, text_dim=info.config.text_dim, max_len=info.config.text_len)
    text = check_text(info, text)
    inputs = StreamInputs((height // 8, width // 8), reference=reference, text=text,
                          signals=tuple(driving_signals(job, model, fps, device,
                                                          audio_alignment=info.sampler.audio_alignment)))
    audio = None if job.audio is None else audio_for_mux(*load_audio(job.audio))
    plan = prepare(model, vae, cfg, inputs, fps=fps, length=Length.of(frames=job.frames, seconds=job.seconds),
                   seed=job.seed, audio=audio)
    log.info("%s: %dx%d @ %d fps, %d frames, %s on %s, %s", job.name, width, height, fps, plan.num_frames, dtype,
             device, cfg)
    output = FileOutput(job.out, overwrite=job.overwrite, resume=job.resume, crf=job.crf, save_every=job.save_every,
                        fingerprint=fingerprint(job, cfg, fps, (height, width), dtype), name=job.name,
                        progress=progress)
    return plan, output


def driving_signals(job: RenderJob, model: KnotDiT, fps: int, device: str,
                    audio_alignment: str = "avatarforcing") -> list:
    """Signals for the model's driving adapters from the job's files (end_policy: the job's);
    audio_alignment: the model's audio front end (SamplerDefaults.audio_alignment)."""
    from .signals import ExpressionSignal, PoseSignal, load_expression, load_openpose_folder

    # the files first (their own errors name them), then whether this model takes them
    pose = None if job.pose is None else load_openpose_folder(job.pose)
    expression = None if job.expression is None else load_expression(job.expression, source_fps=job.expression_fps)
    wanted = {adapter.signal for adapter in model.driving.values()}
    foreign = sorted(wanted - {"audio", "pose", "expression"})
    if foreign:  # never render with an adapter silently unfed (e.g. the demo model's procedural 'motion')
        raise InputError(f"this model is driven by the {foreign} signal(s), which render has no input for (it "
                         "takes --audio, --pose, --expression); the demo model renders with `python -m knot_core "
                         "demo` or the Knot Motion Signal node")
    for name, given in (("pose", pose), ("expression", expression)):
        if given is not None and name not in wanted:
            raise InputError(f"--{name} was given but this model has no {name} adapter (it is driven by "
                             f"{sorted(wanted) or 'nothing'}); leave --{name} out or use a {name}-driven model")
    signals = [] if pose is None else [PoseSignal(pose, fps, end_policy=job.end_policy)]
    if expression is not None:
        signals.append(ExpressionSignal(expression, fps, end_policy=job.end_policy))
    if "audio" in wanted and job.audio is not None:
        if job.wav2vec is None:
            raise InputError("this model is driven by speech: give --wav2vec PATH, a local wav2vec2-base-960h "
                             "folder (or its model.safetensors); nothing is downloaded")
        from .signals import AudioSignal, Wav2Vec2Features, load_wav2vec2

        features = Wav2Vec2Features(load_wav2vec2(job.wav2vec, device=device))
        signals.append(AudioSignal.from_file(job.audio, features, fps=fps, end_policy=job.end_policy,
                                             alignment=audio_alignment))
    return signals


def read_image(path: Path) -> Tensor:
    """A photo file -> (1, H, W, 3) float32 RGB in 0..1, the ComfyUI IMAGE layout the node gets (any format
    OpenCV reads; alpha dropped, grey expanded, 16-bit scaled, EXIF rotation applied)."""
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)  # works for non-ASCII paths, unlike cv2.imread
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None  # (H, W, 3) uint8 BGR
    if image is None:
        raise InputError(f"reference {str(path)!r} is not a readable image; give a PNG, JPEG or WebP photo")
    from .reference_crop import check_reference_size

    check_reference_size(*image.shape[:2])  # before the float copy: a 10000x10000 photo would take 1.2 GB
    rgb = np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB
    return (torch.from_numpy(rgb).float() / 255.0)[None]  # (1, H, W, 3)
