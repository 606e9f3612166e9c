"""Command line: `python -m knot_core <subcommand>` (also the `knot-forcing` script).

One `add_<name>(subparsers)` + `run_<name>(args) -> int` pair per subcommand, listed in
SUBCOMMANDS; a new subcommand (render, batch, demo) adds its pair there. KnotErrors are
printed as one `error: ...` line with exit status 2. The only module that prints.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from .errors import KnotError


def _dtype_names() -> tuple[str, ...]:
    from .config import DTYPE_NAMES

    return DTYPE_NAMES


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", metavar="PATH", help="a separate PEFT LoRA file to merge (e.g. LongLive's lora.pt)")
    p.add_argument("--lora-alpha", type=float, metavar="A",
                   help="LoRA alpha when the file does not store it (default: the format's known value, else rank)")
    p.add_argument("--num-heads", type=int, metavar="N",
                   help="attention heads for files that do not store it (default: dim / 128, as in every Wan2.1)")
    p.add_argument("--text-len", type=int, metavar="L", help="text context length (default 512, Wan's umT5 length)")
    _add_loop_option(p)


def _add_loop_option(p: argparse.ArgumentParser) -> None:
    from .model_loops import LOOPS

    p.add_argument("--loop", choices=tuple(LOOPS), default=None,
                   help="run the file with this public model's own loop (default: what the file names, e.g. "
                        "LiveTalk's layout; needed for Causal Forcing .pt files, which look like Self Forcing's)")


def _model_kwargs(args: argparse.Namespace) -> dict:
    return {"lora": args.lora, "lora_alpha": args.lora_alpha, "num_heads": args.num_heads,
            "text_len": args.text_len, "loop": args.loop}


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert any supported DiT checkpoint to a Knot Forcing model file",
                       description="Read IN (Wan/ComfyUI safetensors, Self Forcing-family .pt, LongLive base + "
                                   "--lora, AvatarForcing, or our own format) and write OUT as a .safetensors "
                                   "with knot_forcing metadata (architecture, adapters, sampler defaults).")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--dtype", choices=_dtype_names(), default="bf16", help="stored precision (default bf16)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    _add_model_options(p)


def run_convert(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .checkpoints import load_dit, save_knot_model
    from .file_sink import check_output
    from .summary import format_summary

    inputs = [Path(args.input)] + ([Path(args.lora)] if args.lora else [])
    check_output(Path(args.output), inputs, overwrite=args.overwrite, suffixes=(".safetensors",))
    model, info = load_dit(args.input, dtype=args.dtype, **_model_kwargs(args))
    save_knot_model(model, args.output, info)
    print(f"wrote {args.output}\n{format_summary(info)}")
    return 0


def add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="show what a checkpoint is: format, architecture, adapters, sampler defaults",
                       description="Reads headers only (no weights), so it is instant on multi-GB files.")
    p.add_argument("path", metavar="PATH")
    _add_model_options(p)


def run_inspect(args: argparse.Namespace) -> int:
    from .checkpoints import describe_dit, open_checkpoint
    from .summary import format_summary
    from .tiny_codec import describe_tiny_codec, is_tiny_codec_file

    if is_tiny_codec_file(open_checkpoint(args.path).shapes):
        print(describe_tiny_codec(args.path))
        return 0
    print(format_summary(describe_dit(args.path, **_model_kwargs(args))))
    return 0


def _add_stream_options(p: argparse.ArgumentParser) -> None:
    """One flag per StreamConfig field, same name with dashes; unset flags keep the model's defaults."""
    import dataclasses

    from .config import SINK_POSITIONS, STRATEGIES, StreamConfig

    g = p.add_argument_group("stream settings (default: the model file's recommendation)")
    for f in dataclasses.fields(StreamConfig):
        flag, kind = "--" + f.name.replace("_", "-"), type(f.default if f.default is not dataclasses.MISSING else 0)
        if f.name in ("strategy", "sink_positions"):
            g.add_argument(flag, choices=STRATEGIES if f.name == "strategy" else SINK_POSITIONS, default=None)
        elif kind is bool:
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif kind is tuple:
            g.add_argument(flag, metavar="T1,T2,...", default=None, help="denoising timesteps, e.g. 1000,750,500,250")
        else:
            g.add_argument(flag, type=kind, metavar="N" if kind is int else "X", default=None)


def _add_job_options(p: argparse.ArgumentParser, *, threads: int | None = None) -> None:
    """The output and run flags `render` and `demo` share (both run the same render path)."""
    g = p.add_argument_group("output and run")
    g.add_argument("--crf", type=int, default=18, help="H.264 quality, 0 lossless .. 51 (default 18)")
    g.add_argument("--save-every", type=int, default=None, metavar="N",
                   help="save the resume state every N chunks (default: every 60 s, since a full-size state is "
                        "gigabytes; it is also saved when stopped)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output (and its resume state)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted render of the same job")
    g.add_argument("--threads", type=int, metavar="N", default=threads,
                   help=f"CPU threads for torch (default: {threads or 'torch' + chr(39) + 's choice'})")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def _settings(args: argparse.Namespace) -> dict:
    """The stream-setting flags that were given (the rest stay the model's recommendation)."""
    from .config import STREAM_FIELDS

    return {name: getattr(args, name) for name in STREAM_FIELDS if getattr(args, name) is not None}


def add_render(sub: argparse._SubParsersAction) -> None:
    from .compilation import COMPILE_MODES

    p = sub.add_parser("render", help="render one portrait video to MP4 (streamed to disk, resumable)",
                       description="Animate --reference with the driving inputs and write --out chunk by chunk, "
                                   "with the driving audio muxed. Ctrl-C (or SIGTERM) finishes the current chunk, "
                                   "closes a playable file and saves the state; --resume continues it.")
    g = p.add_argument_group("inputs")
    g.add_argument("--reference", required=True, metavar="IMAGE", help="the portrait photo (PNG/JPEG/WebP)")
    g.add_argument("--model", required=True, metavar="PATH", help="DiT checkpoint (any format `inspect` reads)")
    g.add_argument("--vae", required=True, metavar="PATH",
                   help="wan_2.1_vae.safetensors or Wan2.1_VAE.pth; or, for fast lower-quality decoding, the tiny "
                        "taew2_1 / lighttaew2_1 (read from the keys; which latents it takes from its published name)")
    g.add_argument("--audio", metavar="FILE", help="speech (wav, mp3, m4a, ...): drives an audio model, is muxed "
                                                   "into the output and, by default, sets its length")
    g.add_argument("--pose", metavar="JSON_DIR", help="folder of OpenPose JSON files, one per frame")
    g.add_argument("--expression", metavar="CSV", help="expression coefficients (Live Link Face CSV, CSV, JSON)")
    g.add_argument("--expression-fps", type=float, metavar="FPS",
                   help="rate of a plain expression CSV's rows (Live Link Face and JSON files carry their own)")
    g.add_argument("--text", metavar="EMBEDDING", help="umT5 prompt embedding (.safetensors)")
    g.add_argument("--wav2vec", metavar="PATH", help="local wav2vec2-base-960h folder (audio-driven models)")
    g = p.add_argument_group("output")
    g.add_argument("--out", required=True, metavar="MP4")
    length = g.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, help="video length (default: until the driving input ends)")
    length.add_argument("--frames", type=int, help="video length in frames")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--fps", type=int, help="output frame rate (default: the model's)")
    g.add_argument("--width", type=int, help="video width, a multiple of 16 (with --height)")
    g.add_argument("--height", type=int, help="video height, a multiple of 16 (with --width)")
    g.add_argument("--fit", choices=_framing_modes(), default="crop",
                   help="reference framing, as the Encode Reference node: crop (centre), face_crop, pad, stretch")
    g.add_argument("--end-policy", choices=_end_policies(), default="continue",
                   help="at the end of --pose/--expression/--audio: continue (silence / the last pose held for the "
                        "last knot; default) or stop (the video ends where the signal can serve a whole chunk)")
    g.add_argument("--dtype", choices=_dtype_names(), help="default bf16 on CUDA, fp32 on the CPU")
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    g.add_argument("--compile", choices=COMPILE_MODES, default="none",
                   help="torch.compile the DiT blocks (faster chunks after a compile of the first ones)")
    _add_loop_option(g)
    _add_job_options(p)
    _add_stream_options(p)


def _framing_modes() -> tuple[str, ...]:
    from .reference_crop import FRAMING_MODES

    return FRAMING_MODES


def _end_policies() -> tuple[str, ...]:
    from .signals.base import END_POLICIES

    return END_POLICIES


def _render_job(args: argparse.Namespace):
    from .render import RenderJob

    own = ("reference", "model", "vae", "out", "audio", "pose", "expression", "text", "wav2vec", "seconds",
           "frames", "seed", "fps", "width", "height", "fit", "end_policy", "expression_fps", "dtype", "device", "crf",
           "compile", "save_every", "resume", "overwrite", "loop")
    return RenderJob(settings=_settings(args), **{k: getattr(args, k) for k in own})


class _StopRequest:
    """SIGINT/SIGTERM handler for the length of one render: the first signal asks to stop after the chunk."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> _StopRequest:
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt  # a second signal: stop now (the last saved state still resumes)
        self.signum = signum
        print("\nstopping after the current chunk (press Ctrl-C again to stop now) ...", file=sys.stderr)

    def __call__(self) -> bool:
        return self.signum is not None


def _run_stoppable(out, start: Callable) -> tuple[object | None, int]:
    """Run a render under the SIGINT/SIGTERM handler: (result, 0), or (None / result, exit status) when stopped."""
    from pathlib import Path

    from .file_sink import state_path
    from .render_marker import describe_output

    with _StopRequest() as stop:
        try:
            result = start(stop)
        except KeyboardInterrupt:
            print(f"stopped mid-chunk: {describe_output(Path(out), state_path(Path(out))).describe()}",
                  file=sys.stderr)
            return None, 130
    if result.interrupted:
        print(f"interrupted: {describe_output(result.path, state_path(result.path)).describe()}", file=sys.stderr)
        return result, 128 + (stop.signum or 2)
    return result, 0


def run_render(args: argparse.Namespace) -> int:
    from .render import render
    from .render_path import torch_threads

    job = _render_job(args)
    _check_threads(args.threads)
    with torch_threads(args.threads):
        result, status = _run_stoppable(job.out, lambda stop: render(job, progress=not args.quiet, should_stop=stop))
    if status == 0:
        print(f"wrote {result.path}: {result.frames} frames in {result.seconds:.1f} s "
              f"({result.fps_achieved:.1f} frames/s)")
    return status


def _check_threads(threads: int | None) -> None:
    from .errors import InputError

    if threads is not None and threads < 1:
        raise InputError(f"--threads {threads}; give a positive number of CPU threads (or leave it out)")


def add_batch(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="render many jobs from a JSON Lines or TOML file; failures are reported, "
                                     "the rest go on",
                       description="JOBS: .jsonl (one JSON object per line) or .toml (top-level keys are defaults, "
                                   "then [[job]] tables). Keys are the render flags (--audio -> audio, "
                                   "--chunk-len -> chunk_len); relative paths are relative to the jobs file.")
    p.add_argument("jobs", metavar="JOBS")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="jobs at once on this machine (processes; spread over the CUDA devices)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the jobs on a Ray cluster: auto, ray://host:10001, or local (a Ray instance here)")
    p.add_argument("--save-every", type=int, metavar="N", help="default save_every for jobs that do not set it")
    p.add_argument("--overwrite", action="store_true", help="re-render jobs whose output exists")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted jobs, skip finished ones, start the others")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_batch(args: argparse.Namespace) -> int:
    from .batch import format_summary, load_jobs, run_jobs

    jobs = load_jobs(args.jobs, overwrite=args.overwrite, save_every=args.save_every)
    with _StopRequest() as stop:  # first Ctrl-C: the running job saves its state, no new job starts
        try:
            results = run_jobs(jobs, workers=args.workers, ray_address=args.ray, resume=args.resume,
                               progress=not args.quiet, should_stop=stop)
        except KeyboardInterrupt:
            from .render import state_path
            from .render_marker import describe_output

            found = [describe_output(e.job.out, state_path(e.job.out)) for e in jobs if e.job is not None]
            print("stopped mid-chunk. " + "; ".join(f.describe() for f in found if f.exists and not f.finished),
                  file=sys.stderr)
            return 130
    print(format_summary(results))
    if stop():
        print("stopped: continue with the same command plus --resume", file=sys.stderr)
        return 128 + (stop.signum or 2)
    return 0 if all(r.ok for r in results) else 1


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render an animated portrait with the bundled demo model (no downloads)",
                       description="A procedural portrait driven by seeded head motion and, for the mouth, the "
                                   "loudness of a speech clip (bundled, or --audio), generated chunk by chunk on "
                                   "the bundled 4-layer Knot Forcing model (96x96), 25 fps, audio muxed in. "
                                   "--models renders another demo model (a train/recipe.sh run's) at its size.")
    p.add_argument("--out", default="demo.mp4", metavar="PATH",
                   help="output MP4 (default demo.mp4; an existing file is kept unless --overwrite)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=6.0, metavar="N",
                        help="length; renders 1 + 4(T-1) frames with T = 1 + ceil((25N - 1) / 4) latents (default 6)")
    length.add_argument("--frames", type=int, metavar="N", help="length in video frames")
    p.add_argument("--audio", metavar="FILE", help="speech file that drives the mouth and is muxed in")
    p.add_argument("--seed", type=int, default=0, help="seed of the head motion and the sampler noise")
    p.add_argument("--portrait-seed", type=int, default=2026, help="which procedural identity to animate")
    p.add_argument("--models", metavar="DIR", help="folder holding demo.safetensors and demo_codec.safetensors "
                                                   "(default: the bundled ones)")
    _add_job_options(p, threads=1)
    _add_stream_options(p)


def run_demo(args: argparse.Namespace) -> int:
    from .demo import FPS, render_demo

    _check_threads(args.threads)
    options = {"frames": args.frames, "seed": args.seed, "portrait_seed": args.portrait_seed,
               "settings": _settings(args), "overwrite": args.overwrite, "resume": args.resume, "crf": args.crf,
               "save_every": args.save_every, "threads": args.threads}
    if args.models is not None:
        options["models"] = args.models  # DemoJob makes it a Path
    report, status = _run_stoppable(args.out, lambda stop: render_demo(
        args.out, args.seconds, args.audio, should_stop=stop, progress=not args.quiet, **options))
    if status == 0:
        print(f"wrote {report.path}: {report.frames} frames ({report.latent_frames} latent frames) at {FPS} fps "
              f"in {report.wall_s:.2f} s = {report.fps:.1f} frames/s ({report.realtime_factor:.2f}x real time)")
    return status


def add_live(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("live", help="a live portrait: your microphone (browser) or a program (WebSocket) drives it",
                       description="Starts the bundled demo model as a live stream and serves its page (WebRTC: "
                                   "microphone in, video and audio out) and WebSocket API until Ctrl-C. Needs "
                                   "aiortc and aiohttp.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8390, help="port (default 8390; 0 picks a free one)")
    p.add_argument("--record", metavar="PATH", help="also write what is streamed to this MP4 as it goes")
    p.add_argument("--overwrite", action="store_true", help="let --record replace an existing file")
    p.add_argument("--seconds", type=float, metavar="N", help="stop after N seconds (default: run until Ctrl-C)")
    p.add_argument("--portrait-seed", type=int, default=2026, help="which procedural identity to animate")
    p.add_argument("--motion-amount", type=float, default=0.8, help="head motion amplitude, 0..1 (0: still head)")
    p.add_argument("--models", metavar="DIR", help="folder holding demo.safetensors and demo_codec.safetensors "
                                                   "(default: the bundled ones)")


def run_live(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .live.demo import DemoLiveOptions, ServeOptions, serve_demo

    demo = DemoLiveOptions(portrait_seed=args.portrait_seed, motion_amount=args.motion_amount,
                           **({} if args.models is None else {"models": Path(args.models).expanduser()}))
    serve_demo(ServeOptions(args.host, args.port, args.record, args.overwrite, args.seconds, demo), say=print)
    return 0


SUBCOMMANDS: list[tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = [
    (add_convert, run_convert),
    (add_inspect, run_inspect),
    (add_render, run_render),
    (add_batch, run_batch),
    (add_demo, run_demo),
    (add_live, run_live),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m knot_core",
                                     description="Knot Forcing: streaming portrait animation on a causal Wan2.1 DiT")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress (INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, run in SUBCOMMANDS:
        before = set(sub.choices)
        add(sub)
        for name in set(sub.choices) - before:
            sub.choices[name].set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return args.run(args)
    except KnotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `inspect ... | head -1`: the reader left; stop quietly, as other tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush does not raise again
        return 141  # 128 + SIGPIPE
    except OSError as err:  # the machine said no (permissions, a full disk, a vanished file): name it, no traceback
        where = f" {err.filename!r}" if err.filename else ""
        print(f"error: {err.strerror or err}{where}; check the path, its permissions and the free disk space",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
