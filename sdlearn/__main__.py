"""Command line: ``python -m sdlearn generate "a red circle" -o out.png`` (the headless main job).

Introduced in notebooks/00_quick_tour.ipynb.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sdlearn", description="Stable Diffusion, taken apart.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="text -> image with a diffusers pipeline")
    g.add_argument("prompt")
    g.add_argument("-o", "--output", type=Path, default=Path("out.png"), help="PNG file to write")
    g.add_argument("--negative", default=None, help="negative prompt (replaces the empty prompt)")
    g.add_argument("--model", default=None, help="mini (default, offline), tiny, sd15, or a folder")
    g.add_argument("--steps", type=_positive(int), default=25)
    g.add_argument("--guidance", type=float, default=7.5)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--size", type=_positive(int), default=None,
                   help="height = width in pixels, a multiple of 8 (default: the model's native size)")
    g.add_argument("--device", default=None)
    sub.add_parser("models", help="list the model registry")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .models import REGISTRY, default_model, load_pipeline

    if args.command == "models":
        for m in REGISTRY.values():
            print(f"{m.name:13s} {m.source:52s} {m.description}")
        print(f"default: {default_model()}")
        return 0
    # Check everything we can before loading weights or computing anything.
    if args.size is not None and args.size % 8:
        print(f"error: --size must be a multiple of 8 (the VAE's factor), got {args.size}", file=sys.stderr)
        return 2
    if args.output.suffix.lower() != ".png":
        print(f"error: --output must end in .png, got {args.output}", file=sys.stderr)
        return 2
    if not args.output.parent.exists():
        print(f"error: folder {args.output.parent} does not exist", file=sys.stderr)
        return 2
    from .device import make_generator

    pipe = load_pipeline(args.model, device=args.device)
    size = args.size or pipe.unet.config.sample_size * pipe.vae_scale_factor
    t0 = time.time()
    image = pipe(args.prompt, negative_prompt=args.negative, height=size, width=size,
                 num_inference_steps=args.steps, guidance_scale=args.guidance,
                 generator=make_generator(args.seed)).images[0]
    image.save(args.output)
    print(f"wrote {args.output} ({size}x{size}, {args.steps} steps, {time.time() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
