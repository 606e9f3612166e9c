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

DTYPE_CHOICES = ("bf16", "fp16", "fp32")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lora", metavar="PATH", help="a separate PEFT LoRA file to merge (e.g. LongLive's lora.pt)")
    p.add_argument("--lora-alpha", type=float, metavar="A",
                   help="LoRA alpha when the file does not store it (default: the format's known value, else rank)")
    p.add_argument("--num-heads", type=int, metavar="N",
                   help="attention heads for files that do not store it (default: dim / 128, as in every Wan2.1)")
    p.add_argument("--text-len", type=int, metavar="L", help="text context length (default 512, Wan's umT5 length)")


def _model_kwargs(args: argparse.Namespace) -> dict:
    return {"lora": args.lora, "lora_alpha": args.lora_alpha, "num_heads": args.num_heads,
            "text_len": args.text_len}


def add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert any supported DiT checkpoint to a Knot Forcing model file",
                       description="Read IN (Wan/ComfyUI safetensors, Self Forcing-family .pt, LongLive base + "
                                   "--lora, AvatarForcing, or our own format) and write OUT as a .safetensors "
                                   "with knot_forcing metadata (architecture, adapters, sampler defaults).")
    p.add_argument("input", metavar="IN")
    p.add_argument("output", metavar="OUT")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default="bf16", help="stored precision (default bf16)")
    _add_model_options(p)


def run_convert(args: argparse.Namespace) -> int:
    from .checkpoints import load_dit, save_knot_model
    from .summary import format_summary

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
    from .checkpoints import describe_dit
    from .summary import format_summary

    print(format_summary(describe_dit(args.path, **_model_kwargs(args))))
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="render an animated portrait with the bundled demo model (no downloads)",
                       description="A procedural portrait driven by seeded head motion and, for the mouth, the "
                                   "loudness of a speech clip (bundled, or --audio), generated chunk by chunk on "
                                   "the bundled 4-layer Knot Forcing model at 64x64, 25 fps, audio muxed in.")
    p.add_argument("--out", default="demo.mp4", metavar="PATH", help="output MP4 (default demo.mp4; overwritten)")
    p.add_argument("--seconds", type=float, default=6.0, metavar="N",
                   help="length; renders 1 + 4(T-1) frames with T = 1 + ceil((25N - 1) / 4) latents (default 6)")
    p.add_argument("--audio", metavar="FILE", help="speech file that drives the mouth and is muxed in")
    p.add_argument("--seed", type=int, default=0, help="seed of the head motion and the sampler noise")
    p.add_argument("--portrait-seed", type=int, default=2026, help="which procedural identity to animate")


def run_demo(args: argparse.Namespace) -> int:
    from .demo import FPS, render_demo

    report = render_demo(args.out, args.seconds, args.audio, seed=args.seed, portrait_seed=args.portrait_seed)
    print(f"wrote {report.path}: {report.frames} frames ({report.latent_frames} latent frames) at {FPS} fps "
          f"in {report.wall_s:.2f} s = {report.fps:.1f} frames/s ({report.realtime_factor:.2f}x real time)")
    return 0


SUBCOMMANDS: list[tuple[Callable[[argparse._SubParsersAction], None], Callable[[argparse.Namespace], int]]] = [
    (add_convert, run_convert),
    (add_inspect, run_inspect),
    (add_demo, run_demo),
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
