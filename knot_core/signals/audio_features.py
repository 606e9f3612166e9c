"""Speech driving signal: wav2vec2 features exactly as AvatarForcing expects, computed window by window.

Reference: AvatarForcing's audio front end (FIELD_NOTES §3), the Hallo/EchoMimic-style
wav2vec2 variant whose conv features are linearly interpolated (align_corners) to the
video frame count before the feature projection and transformer. Weight-compatible with
Hugging Face `facebook/wav2vec2-base-960h` (folder or single safetensors, with or without
the CTC head's `wav2vec2.` prefix); `transformers` is needed only on this path.

Per video frame the row is [last hidden state, hidden states 0..L] = (L+2)·H values
(14·768 = 10752 for the base model). Rows are served per latent frame in one of two alignments:
  avatarforcing: a zero row is prepended, latent 0 gets it ×4 and latent k >= 1 gets rows
    4k-3..4k, i.e. video frames 4k-4..4k-1; a clip of d seconds has ceil(d·fps) frames.
  livetalk (LiveTalk scripts/inference_example.py l.160-185): no zero row, the first row is
    repeated 3 times in front, so latent 0 gets video frame 0 ×4 and latent k >= 1 video frames
    4k-3..4k (the Wan VAE's own mapping); a clip of d seconds has floor(d·fps) + 1 frames
    (LiveTalk interpolates (4n-4)/16 s of audio to 4n-3 frames, both ends included).

Long audio: the transformer attends over a window of `window_frames` video frames plus
`context_frames` on each side, and keeps only the window's rows; clips that fit in one
window (≤ window + 2·context frames) are computed whole, exactly as the reference. The
conv front end is exact in windows: its receptive field is local, and the first layer's
GroupNorm uses per-channel statistics gathered over the whole clip in a streaming pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..audio import TARGET_SAMPLE_RATE, audio_from_comfy, load_mono_16k, to_mono_16k
from ..errors import CheckpointError, InputError, MissingDependencyError
from .base import FRAMES_PER_LATENT, NO_FRAME, DrivingSignal, EndPolicy, RowCache, check_fps

log = logging.getLogger(__name__)

AVATAR_FPS = 25.0  # AvatarForcing features and output are at 25 fps
ALIGNMENTS: tuple[str, ...] = ("avatarforcing", "livetalk")
NORM_EPS = 1e-7  # as Hugging Face's zero_mean_unit_var_norm
STATS_BLOCK = 1 << 17  # samples per block of the streaming statistics passes (8 s at 16 kHz)


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingDependencyError(
            "the wav2vec2 audio features need the optional package 'transformers' (not installed); "
            "install it with: pip install transformers") from exc
    return transformers


def _config_from_state(state: dict[str, Tensor]):
    """Wav2Vec2Config derived from tensor shapes (single-file checkpoints carry no config)."""
    transformers = _import_transformers()
    convs = sorted(int(k.split(".")[2]) for k in state if k.startswith("feature_extractor.conv_layers.")
                   and k.endswith(".conv.weight"))
    layers = {int(k.split(".")[2]) for k in state if k.startswith("encoder.layers.")}
    if not convs or not layers or "feature_projection.projection.weight" not in state:
        raise CheckpointError("the safetensors file is not a wav2vec2 model (no feature_extractor.conv_layers / "
                              "encoder.layers / feature_projection keys); give wav2vec2-base-960h")
    conv_w = [state[f"feature_extractor.conv_layers.{i}.conv.weight"] for i in convs]
    hidden = state["feature_projection.projection.weight"].shape[0]
    pos = next((v for k, v in state.items() if k.startswith("encoder.pos_conv_embed.conv.") and v.ndim == 3
                and v.shape[0] == hidden), None)
    if pos is None:
        raise CheckpointError("the wav2vec2 file has no positional conv weights (encoder.pos_conv_embed.conv.*); "
                              "give a complete wav2vec2-base-960h")
    group_norm = "feature_extractor.conv_layers.0.layer_norm.weight" in state and \
        "feature_extractor.conv_layers.1.layer_norm.weight" not in state
    # Strides of wav2vec2 convs are not stored; the base front end (5,2,2,2,2,2,2) is the only one in use.
    strides = (5,) + (2,) * (len(convs) - 1)
    return transformers.Wav2Vec2Config(
        conv_dim=[w.shape[0] for w in conv_w], conv_kernel=[w.shape[2] for w in conv_w], conv_stride=list(strides),
        conv_bias="feature_extractor.conv_layers.0.conv.bias" in state,
        feat_extract_norm="group" if group_norm else "layer", hidden_size=hidden,
        num_hidden_layers=len(layers), num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["encoder.layers.0.feed_forward.intermediate_dense.weight"].shape[0],
        num_conv_pos_embeddings=pos.shape[2], num_conv_pos_embedding_groups=hidden // pos.shape[1],
        do_stable_layer_norm="encoder.layers.0.final_layer_norm.weight" in state and not group_norm)


def load_wav2vec2(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """A local wav2vec2 (Hugging Face folder, or one .safetensors file) as a transformers Wav2Vec2Model, eval mode."""
    transformers = _import_transformers()
    path = Path(path)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{str(path)!r} has no config.json; give a Hugging Face wav2vec2 folder "
                                  "(e.g. wav2vec2-base-960h) or its model.safetensors file")
        model = transformers.Wav2Vec2Model.from_pretrained(str(path), local_files_only=True)
    elif path.is_file() and path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = {k.removeprefix("wav2vec2."): v for k, v in load_file(str(path)).items()
                 if not k.startswith(("lm_head.", "quantizer.", "project_", "masked_spec_embed"))}
        side = path.with_name("config.json")
        config = (transformers.Wav2Vec2Config.from_json_file(str(side)) if side.is_file()
                  else _config_from_state(state))
        model = transformers.Wav2Vec2Model(config)
        own = model.state_dict().keys()
        renames = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
        for old, new in renames.items():
            for key in [k for k in state if k.endswith(f"pos_conv_embed.conv.{old}")]:
                if key not in own:
                    state[key.replace(old, new)] = state.pop(key)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if k != "masked_spec_embed"]
        if missing or unexpected:
            raise CheckpointError(f"{str(path)!r} does not match a wav2vec2 model: missing {missing[:5]}, "
                                  f"unexpected {unexpected[:5]}")
    else:
        raise CheckpointError(f"wav2vec2 path {str(path)!r} is neither a folder nor a .safetensors file")
    return model.to(device).eval()


def normalise_waveform(wave: Tensor) -> Tensor:
    """Zero mean, unit variance over the whole clip (as wav2vec2-base-960h was fed in training).

    Moments are summed in float64 block by block, so no float64 copy of an hour of audio is made.
    """
    total = sq = 0.0
    for block in wave.split(STATS_BLOCK):
        total += float(block.sum(dtype=torch.float64))
        sq += float(block.to(torch.float64).square().sum())
    mean = total / wave.numel()
    var = max(sq / wave.numel() - mean * mean, 0.0)
    out = wave.to(torch.float32, copy=True)  # one copy, normalised in place
    return out.sub_(mean).div_(math.sqrt(var + NORM_EPS))  # [N]


@dataclass(frozen=True)
class ConvGeometry:
    """Stride and receptive field (in samples) of the whole conv front end."""

    stride: int
    field: int


class Wav2Vec2Features:
    """Frame-aligned wav2vec2 rows for any range of video frames of one normalised clip."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        cfg = model.config
        self.kernels, self.strides = list(cfg.conv_kernel), list(cfg.conv_stride)
        field, jump = 1, 1
        for k, s in zip(self.kernels, self.strides):
            field += (k - 1) * jump
            jump *= s
        self.geometry = ConvGeometry(stride=jump, field=field)
        self.hidden_size = int(cfg.hidden_size)
        self.num_layers = int(cfg.num_hidden_layers)
        first = model.feature_extractor.conv_layers[0]
        self._group_norm = first.layer_norm if isinstance(getattr(first, "layer_norm", None), nn.GroupNorm) else None

    @property
    def feature_dim(self) -> int:
        """(num_hidden_layers + 2) · hidden_size: last hidden state plus hidden states 0..L."""
        return (self.num_layers + 2) * self.hidden_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def conv_length(self, samples: int) -> int:
        for k, s in zip(self.kernels, self.strides):
            samples = (samples - k) // s + 1
        return max(samples, 0)

    @torch.no_grad()
    def group_stats(self, wave: Tensor) -> tuple[Tensor, Tensor] | None:
        """Per-channel mean/var of the first conv layer over the whole clip, in bounded-memory blocks."""
        if self._group_norm is None:
            return None
        conv = self.model.feature_extractor.conv_layers[0].conv
        k, s = self.kernels[0], self.strides[0]
        total = sq = None
        count = 0
        step = (STATS_BLOCK // s) * s
        for start in range(0, max(wave.numel() - k + 1, 1), step):
            seg = wave[start:start + step + k - s].to(self.device)
            if seg.numel() < k:
                break
            h = conv(seg[None, None])[0]  # [C, n]
            part, part_sq = h.sum(1, dtype=torch.float64), h.square().sum(1, dtype=torch.float64)
            total = part if total is None else total + part
            sq = part_sq if sq is None else sq + part_sq
            count += h.shape[1]
        assert count > 0, "callers check the clip holds at least one wav2vec2 frame"
        mean = total / count
        return mean.float(), (sq / count - mean * mean).clamp(min=0).float()

    def _conv_features(self, segment: Tensor, stats: tuple[Tensor, Tensor] | None) -> Tensor:
        """Normalised samples [n] -> conv features [C, L]; GroupNorm with the whole clip's statistics."""
        h = segment.to(self.device)[None, None]  # [1, 1, n]
        for i, layer in enumerate(self.model.feature_extractor.conv_layers):
            if i == 0 and stats is not None:
                gn = self._group_norm
                h = layer.conv(h)  # [1, C, L0]
                h = (h - stats[0][:, None]) * torch.rsqrt(stats[1][:, None] + gn.eps)
                h = layer.activation(h * gn.weight[:, None] + gn.bias[:, None])
            else:
                h = layer(h)
        return h[0]  # [C, L]

    def _encode(self, conv: Tensor) -> Tensor:
        """Interpolated conv features [n, C] -> rows [n, (L+2)·H]: [last, hidden states 0..L]."""
        hidden, _ = self.model.feature_projection(conv[None])  # [1, n, H]
        states: list[Tensor] = []
        encoder = self.model.encoder
        hooks = [encoder.layers[0].register_forward_pre_hook(lambda m, args: states.append(args[0]))]
        for layer in encoder.layers:
            hooks.append(layer.register_forward_hook(
                lambda m, args, out: states.append(out[0] if isinstance(out, tuple) else out)))
        try:
            out = encoder(hidden)
        finally:
            for hook in hooks:
                hook.remove()
        last = out[0] if isinstance(out, tuple) else out.last_hidden_state  # [1, n, H]
        return torch.cat([last] + states, dim=-1)[0]  # [n, (L+2)·H]

    @torch.no_grad()
    def rows(self, wave: Tensor, stats, num_frames: int, lo: int, hi: int) -> Tensor:
        """Rows of video frames lo..hi-1 computed together (one attention window).

        Frame i sits at conv position i·(Lc−1)/(T−1) (linear, align_corners, as F.interpolate over the
        whole clip of T = num_frames frames); positions past the clip read zero-padded samples.
        """
        n_conv = self.conv_length(wave.numel())
        scale = (n_conv - 1) / (num_frames - 1) if num_frames > 1 else 0.0
        pos = torch.arange(lo, hi, dtype=torch.float64) * scale  # [n]
        j0 = int(pos[0].floor())
        j1 = int(pos[-1].floor()) + 2  # one past the last conv frame read (the right neighbour)
        s, field = self.geometry.stride, self.geometry.field
        a, b = j0 * s, (j1 - 1) * s + field
        real = wave[min(a, wave.numel()):min(b, wave.numel())]  # past the clip: silence
        segment = F.pad(real, (0, (b - a) - real.numel()))  # [b-a]
        conv = self._conv_features(segment, stats)  # [C, j1-j0]
        assert conv.shape[1] == j1 - j0, "a segment of (n-1)·stride + field samples gives n conv frames"
        left = (pos.floor().long() - j0).clamp(max=conv.shape[1] - 1).to(conv.device)  # [n]
        right = (left + 1).clamp(max=conv.shape[1] - 1)
        frac = (pos - pos.floor()).to(conv.dtype).to(conv.device)  # [n]
        interp = conv[:, left] * (1 - frac) + conv[:, right] * frac  # [C, n]
        return self._encode(interp.T.contiguous())  # [n, (L+2)·H]


class AudioSignal(DrivingSignal):
    """wav2vec2 rows of a 16 kHz mono clip at `fps`, computed window by window on demand.

    end_policy 'stop': the signal has num_frames video frames (see the alignments above) and asking past
    them is an error; 'continue': the clip runs on into silence (zero samples) without end.
    alignment: "avatarforcing" or "livetalk", the model's audio front end.
    """

    name = "audio"

    def __init__(self, wave_16k: Tensor, features: Wav2Vec2Features, *, fps: float = AVATAR_FPS,
                 end_policy: EndPolicy = "stop", window_frames: int = 250, context_frames: int = 50,
                 cache_windows: int = 2, alignment: str = "avatarforcing") -> None:
        fps = check_fps(fps, "audio signal")
        if alignment not in ALIGNMENTS:
            raise InputError(f"audio signal: alignment={alignment!r}; choose one of {', '.join(ALIGNMENTS)} (the "
                             "model's audio front end)")
        if wave_16k.ndim != 1 or wave_16k.numel() == 0:
            raise InputError(f"audio signal: got waveform of shape {tuple(wave_16k.shape)}; need mono samples [N] "
                             "at 16 kHz (use knot_core.audio.to_mono_16k)")
        if not torch.isfinite(wave_16k).all():
            raise InputError("audio signal: the waveform has NaN or infinite samples; the audio must be finite")
        if window_frames < FRAMES_PER_LATENT or context_frames < 0:
            raise InputError(f"audio signal: window_frames={window_frames}, context_frames={context_frames}; "
                             f"need window_frames >= {FRAMES_PER_LATENT} and context_frames >= 0")
        if features.conv_length(wave_16k.numel()) < 1:
            raise InputError(f"audio of {wave_16k.numel()} samples is shorter than one wav2vec2 frame "
                             f"({features.geometry.field} samples = {features.geometry.field / 16:.0f} ms); "
                             "give a longer clip")
        seconds_fps = Fraction(wave_16k.numel()) * Fraction(fps) / TARGET_SAMPLE_RATE  # exact: no float rounding
        frames = math.floor(seconds_fps) + 1 if alignment == "livetalk" else math.ceil(seconds_fps)
        super().__init__(fps, frames, end_policy)
        self.alignment = alignment
        self.wave = normalise_waveform(wave_16k)  # [N]
        self.features = features
        self.window_frames, self.context_frames = window_frames, context_frames
        self.stats = features.group_stats(self.wave)
        # A clip that fits in one window is computed whole, exactly as the reference.
        self._first_end = frames if frames <= window_frames + 2 * context_frames else window_frames
        self._cache = RowCache(cache_windows)

    @classmethod
    def from_file(cls, path: str | Path, features: Wav2Vec2Features, **options) -> AudioSignal:
        return cls(load_mono_16k(path), features, **options)

    @classmethod
    def from_comfy(cls, audio: dict, features: Wav2Vec2Features, **options) -> AudioSignal:
        return cls(to_mono_16k(*audio_from_comfy(audio)), features, **options)

    @property
    def row_shape(self) -> tuple[int, ...]:
        return (self.features.feature_dim,)

    @property
    def device(self) -> torch.device:
        return self.features.device

    @property
    def cached_windows(self) -> int:
        """Windows of rows held now (at most cache_windows: memory does not grow with the clip)."""
        return len(self._cache)

    def video_frames_of_latent(self, k: int) -> list[int]:
        """AvatarForcing: latent 0 -> the zero row ×4; latent k >= 1 -> rows 4k-3..4k = video frames 4k-4..4k-1.
        LiveTalk: the Wan VAE's mapping (latent 0 -> frame 0 ×4, latent k -> frames 4k-3..4k)."""
        if self.alignment == "livetalk":
            return super().video_frames_of_latent(k)
        if k == 0:
            return [NO_FRAME] * FRAMES_PER_LATENT
        return list(range(FRAMES_PER_LATENT * (k - 1), FRAMES_PER_LATENT * k))

    def _window(self, frame: int) -> tuple[int, int]:
        """(start, end) of the fixed window holding video frame `frame`."""
        if frame < self._first_end:
            return 0, self._first_end
        w = (frame - self._first_end) // self.window_frames
        start = self._first_end + w * self.window_frames
        return start, start + self.window_frames

    def _window_rows(self, start: int, end: int) -> Tensor:
        rows = self._cache.get(start)
        if rows is None:
            # Context stops at the clip's end unless this window itself runs on into silence.
            within = end <= self.num_frames or self.end_policy == "stop"
            limit = self.num_frames if within else end + self.context_frames
            lo, hi = max(0, start - self.context_frames), min(limit, end + self.context_frames)
            full = self.features.rows(self.wave, self.stats, self.num_frames, lo, hi)  # [hi-lo, D]
            rows = full[start - lo:end - lo].clone()
            self._cache.put(start, rows)
        return rows

    def video_features(self, start: int, count: int) -> Tensor:
        out, frame = [], start
        while frame < start + count:
            w0, w1 = self._window(frame)
            stop = min(w1, start + count)
            out.append(self._window_rows(w0, w1)[frame - w0:stop - w0])
            frame = stop
        return torch.cat(out)  # [count, D]
