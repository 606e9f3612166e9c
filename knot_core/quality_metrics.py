"""Video quality metrics for long streamed renders: seams, drift against ground truth, and driving fidelity.

Cheap, per-frame and streaming-friendly (numpy + OpenCV on small frames), so a 10,000-frame render is
measured chunk by chunk and never held whole:
  * boundary discontinuity (`BoundaryMeter`): mean absolute frame difference across chunk boundaries over
    the mean within chunks — 1.0 is seamless, > 1 shows a visible jump where chunks meet;
  * drift: `psnr` and `ssim` (Wang et al. 2004, "Image Quality Assessment: From Error Visibility to
    Structural Similarity", on grey frames with an 11-tap Gaussian window, sigma 1.5) against the exact
    ground truth that knot_core.faces renders for any driving sequence;
  * driving fidelity: face parameters measured from pixels — mouth opening from the darkness of the
    mouth box (`mouth_darkness`), eye opening from the darkness of the eye box (the same measure: open eyes
    show their dark pupils, closed lids the skin), head position
    from the skin-colour centroid (`skin_centroid`) — mapped to driving units by a linear fit on
    ground-truth renderings (`LinearMap.fit`) and compared with the driving input (`Agreement`: correlation
    and mean absolute error);
  * identity: the L1 distance between a frame's colour histogram and the reference image's
    (`colour_histogram`, `histogram_distance`; pose-tolerant: it counts colours, not where they are), and its
    least-squares trend over the frame index (`Trend`: drift per 1,000 frames);
  * `sharpness`: mean absolute Laplacian (blur lowers it);
  * seams with confidence: `BoundaryMeter` keeps per-chunk sums, and `bootstrap_ratio` resamples chunks for a
    95% interval of the latent-step ratio.
Not a reproduction of any published benchmark's code; the SSIM constants are the paper's (K1 0.01, K2 0.03).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputError

PSNR_CAP = 100.0  # dB reported for identical frames (the true value is +inf)
SSIM_SIGMA = 1.5
SSIM_KERNEL = 11
_GREY = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma weights


def _video(frames: np.ndarray, name: str) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"{name} has shape {frames.shape}; expected video frames (T, H, W, 3)")
    return frames


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = _video(a, "frames"), _video(b, "reference frames")
    if a.shape != b.shape:
        raise InputError(f"frames {a.shape} and reference {b.shape} differ; compare videos of one size and length")
    return a, b


def to_grey(frames: np.ndarray) -> np.ndarray:
    """RGB frames (T, H, W, 3) in [0, 255] -> grey (T, H, W) float32 in [0, 255]."""
    return _video(frames, "frames").astype(np.float32) @ _GREY  # (T, H, W)


def psnr(frames: np.ndarray, reference: np.ndarray, peak: float = 255.0, cap: float = PSNR_CAP) -> np.ndarray:
    """Per-frame PSNR in dB over all RGB values: (T,), identical frames give `cap` instead of inf."""
    a, b = _pair(frames, reference)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))  # (T,)
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(peak**2 / mse)
    return np.minimum(db, cap)


def _blur(x: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(x, (SSIM_KERNEL, SSIM_KERNEL), SSIM_SIGMA, borderType=cv2.BORDER_REFLECT)


def ssim(frames: np.ndarray, reference: np.ndarray, peak: float = 255.0) -> np.ndarray:
    """Per-frame SSIM of the grey frames: (T,), 1.0 for identical frames (mean of the local SSIM map)."""
    a, b = _pair(frames, reference)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    out = np.empty(len(a))
    for i, (x, y) in enumerate(zip(to_grey(a), to_grey(b), strict=True)):
        mx, my = _blur(x), _blur(y)  # (H, W) local means
        vx, vy, cxy = _blur(x * x) - mx * mx, _blur(y * y) - my * my, _blur(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        out[i] = float((num / den).mean())
    return out


def frame_differences(frames: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Mean absolute difference of each frame from the one before: (T,); frame 0 against `previous`
    (the last frame of the previous chunk), or NaN when there is none."""
    f = _video(frames, "frames").astype(np.float32)
    diffs = np.full(len(f), np.nan)
    if len(f) > 1:
        diffs[1:] = np.abs(f[1:] - f[:-1]).mean(axis=(1, 2, 3))
    if previous is not None and len(f):
        diffs[0] = float(np.abs(f[0] - np.asarray(previous, np.float32)).mean())
    return diffs


class BoundaryMeter:
    """Seam strength of a video fed chunk by chunk: boundary / within mean absolute frame differences.

    With `frames_per_latent` (4 for the Wan2.1 VAE contract: latent t >= 1 decodes to frames 4t-3 .. 4t)
    it also keeps the within-chunk steps that cross a latent boundary, since a chunk boundary is always a
    latent boundary too: `latent_ratio` compares like with like, so a decoder that smooths inside a latent
    but not across latents does not count as a seam.
    """

    def __init__(self, last: np.ndarray | None = None, first_frame: int = 0,
                 frames_per_latent: int | None = None) -> None:
        """`last` and `first_frame`: the frame before, and the index of, the first frame fed, when measuring
        a stretch cut from a longer stream."""
        self.last = None if last is None else np.asarray(last).copy()
        self.next_frame, self.frames_per_latent = first_frame, frames_per_latent
        self.boundary_sum, self.boundary_n, self.within_sum, self.within_n = 0.0, 0, 0.0, 0
        self.latent_sum, self.latent_n = 0.0, 0
        self.chunks: list[tuple[float, float, int]] = []  # per chunk: boundary step, latent-crossing sum, count

    def update(self, chunk: np.ndarray) -> None:
        """Add the next chunk's frames (T, H, W, 3); its first difference is a chunk boundary."""
        diffs = frame_differences(chunk, self.last)
        if self.last is not None:
            self.boundary_sum, self.boundary_n = self.boundary_sum + float(diffs[0]), self.boundary_n + 1
        self.within_sum, self.within_n = self.within_sum + float(diffs[1:].sum()), self.within_n + len(diffs) - 1
        if self.frames_per_latent:
            index = np.arange(self.next_frame + 1, self.next_frame + len(diffs))  # global index of diffs[1:]
            crossing = diffs[1:][(index - 1) % self.frames_per_latent == 0]  # steps into a new latent's first frame
            self.latent_sum, self.latent_n = self.latent_sum + float(crossing.sum()), self.latent_n + len(crossing)
            if self.last is not None:
                self.chunks.append((float(diffs[0]), float(crossing.sum()), len(crossing)))
        self.last, self.next_frame = np.asarray(chunk[-1]).copy(), self.next_frame + len(diffs)

    @property
    def boundary_mean(self) -> float:
        return self.boundary_sum / self.boundary_n if self.boundary_n else math.nan

    @property
    def within_mean(self) -> float:
        return self.within_sum / self.within_n if self.within_n else math.nan

    @property
    def ratio(self) -> float:
        """1.0 = seamless; NaN until a boundary and a within-chunk difference have been seen."""
        return _ratio(self.boundary_mean, self.within_mean)

    @property
    def latent_ratio(self) -> float:
        """Boundary steps over within-chunk latent-crossing steps; NaN without frames_per_latent."""
        return _ratio(self.boundary_mean, self.latent_sum / self.latent_n if self.latent_n else math.nan)


def bootstrap_ratio(chunks: list[tuple[float, float, int]], resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """(low, high) interval of the latent-step ratio by resampling whole chunks with replacement (a chunk's
    steps are correlated, chunks much less): `BoundaryMeter.chunks` rows (boundary step, crossing sum, count)."""
    if len(chunks) < 2:
        return math.nan, math.nan
    rows = np.asarray(chunks, np.float64)  # (N, 3)
    pick = np.random.default_rng(seed).integers(0, len(rows), (resamples, len(rows)))  # (R, N)
    boundary = rows[pick, 0].mean(1)
    crossing = rows[pick, 1].sum(1) / np.maximum(rows[pick, 2].sum(1), 1)
    ratios = boundary / np.where(crossing > 0, crossing, np.nan)
    tail = (1 - level) / 2 * 100
    return float(np.nanpercentile(ratios, tail)), float(np.nanpercentile(ratios, 100 - tail))


def _ratio(a: float, b: float) -> float:
    return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else math.nan


def boundary_ratio(video: np.ndarray, chunk_frames: int) -> float:
    """The `BoundaryMeter` ratio of a whole video cut into chunks of `chunk_frames` frames."""
    if chunk_frames < 2:
        raise InputError(f"chunk_frames={chunk_frames}; need >= 2 frames per chunk to have within-chunk steps")
    meter = BoundaryMeter()
    for start in range(0, len(video), chunk_frames):
        meter.update(video[start:start + chunk_frames])
    return meter.ratio


def mouth_darkness(frames: np.ndarray, boxes) -> np.ndarray:
    """255 minus the mean grey level of each frame's mouth box (x0, y0, x1, y1): (T,). An open mouth shows
    its dark inside, so this grows with the opening (knot_core.faces draws it (70, 15, 25))."""
    grey = to_grey(frames)
    if len(boxes) != len(grey):
        raise InputError(f"{len(boxes)} mouth boxes for {len(grey)} frames; give one box per frame")
    return np.array([255.0 - float(g[y0:y1, x0:x1].mean()) for g, (x0, y0, x1, y1) in zip(grey, boxes,
                                                                                          strict=True)])


def sharpness(frames: np.ndarray) -> np.ndarray:
    """Mean absolute Laplacian of each grey frame: (T,). Edges raise it, blur lowers it (a soft smudge of the
    same face scores a fraction of the crisp drawing)."""
    return np.array([float(np.abs(cv2.Laplacian(g, cv2.CV_32F)).mean()) for g in to_grey(frames)])


def colour_histogram(frames: np.ndarray, bins: int = 8) -> np.ndarray:
    """Normalised RGB histograms (T, bins**3): the colours of each frame, wherever they are."""
    f = _video(frames, "frames").astype(np.int64) * bins // 256  # (T, H, W, 3) bin per channel
    idx = (f[..., 0] * bins + f[..., 1]) * bins + f[..., 2]  # (T, H, W)
    hist = np.stack([np.bincount(i.ravel(), minlength=bins**3) for i in idx]).astype(np.float64)
    return hist / hist.sum(1, keepdims=True)


def histogram_distance(frames: np.ndarray, reference: np.ndarray, bins: int = 8) -> np.ndarray:
    """L1 distance (T,) in [0, 2] between each frame's colour histogram and the reference image's (H, W, 3):
    0 = the same colours in the same amounts; a face that takes on other colours moves away."""
    ref = colour_histogram(np.asarray(reference)[None], bins)  # (1, bins**3)
    return np.abs(colour_histogram(frames, bins) - ref).sum(1)


class Trend:
    """Streaming least-squares slope of values over frame index (drift per frame; NaN values skipped)."""

    def __init__(self) -> None:
        self.n, self.sx, self.sy, self.sxx, self.sxy = 0, 0.0, 0.0, 0.0, 0.0

    def update(self, first_frame: int, values: np.ndarray) -> None:
        y = np.asarray(values, np.float64).ravel()
        x = np.arange(first_frame, first_frame + len(y), dtype=np.float64)
        ok = np.isfinite(y)
        x, y = x[ok], y[ok]
        self.n += len(y)
        self.sx, self.sy, self.sxx, self.sxy = self.sx + x.sum(), self.sy + y.sum(), self.sxx + (x * x).sum(), \
            self.sxy + (x * y).sum()

    @property
    def mean(self) -> float:
        return self.sy / self.n if self.n else math.nan

    @property
    def slope(self) -> float:
        if self.n < 2:
            return math.nan
        var = self.sxx - self.sx**2 / self.n
        return (self.sxy - self.sx * self.sy / self.n) / var if var > 0 else math.nan


def skin_centroid(frames: np.ndarray, skin: tuple[int, int, int], tolerance: float = 60.0) -> np.ndarray:
    """Centroid (x, y) in pixels of the skin-coloured pixels of each frame: (T, 2).

    Pixels are weighted by 1 - distance/tolerance (RGB distance to `skin`, clipped at 0), a soft mask
    that tolerates the codec's colour shifts; frames without any skin-like pixel give NaN.
    """
    f = _video(frames, "frames").astype(np.float32)
    dist = np.linalg.norm(f - np.asarray(skin, np.float32), axis=-1)  # (T, H, W)
    w = np.clip(1.0 - dist / tolerance, 0.0, None)
    h, wd = w.shape[1:]
    total = w.sum(axis=(1, 2))  # (T,)
    xs = (w * np.arange(wd, dtype=np.float32)).sum(axis=(1, 2))
    ys = (w * np.arange(h, dtype=np.float32)[:, None]).sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([xs / total, ys / total], axis=1)  # (T, 2)


@dataclass(frozen=True)
class LinearMap:
    """y ≈ slope * x + intercept: turns a pixel measurement into driving units."""

    slope: float
    intercept: float

    @classmethod
    def fit(cls, measured: np.ndarray, target: np.ndarray) -> LinearMap:
        x, y = np.asarray(measured, np.float64), np.asarray(target, np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 2 or np.ptp(x[ok]) == 0:
            raise InputError(f"cannot fit a line to {int(ok.sum())} finite points of constant or missing x; "
                             "calibrate on a ground-truth clip where the parameter varies")
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        return cls(float(slope), float(intercept))

    def __call__(self, measured: np.ndarray) -> np.ndarray:
        return self.slope * np.asarray(measured, np.float64) + self.intercept


class Agreement:
    """Streaming agreement of an estimate with its target: Pearson r and mean absolute error (NaN skipped)."""

    def __init__(self) -> None:
        self.n, self.sx, self.sy, self.sxx, self.syy, self.sxy, self.abs_err = 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0

    def update(self, estimate: np.ndarray, target: np.ndarray) -> None:
        x, y = np.asarray(estimate, np.float64).ravel(), np.asarray(target, np.float64).ravel()
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = x[ok], y[ok]
        self.n += len(x)
        self.sx, self.sy = self.sx + x.sum(), self.sy + y.sum()
        self.sxx, self.syy, self.sxy = self.sxx + (x * x).sum(), self.syy + (y * y).sum(), self.sxy + (x * y).sum()
        self.abs_err += np.abs(x - y).sum()

    @property
    def mae(self) -> float:
        return self.abs_err / self.n if self.n else math.nan

    @property
    def r(self) -> float:
        if self.n < 2:
            return math.nan
        cov = self.sxy - self.sx * self.sy / self.n
        vx, vy = self.sxx - self.sx**2 / self.n, self.syy - self.sy**2 / self.n
        return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else math.nan
