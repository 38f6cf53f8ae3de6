"""Who picks the background, the caption or the noise? A probe of the noise-mean leak.

SD's schedule (scaled_linear, 1000 steps) leaves a little signal at t = 999 (ᾱ = 0.0047), and a
latent's *per-channel mean* survives longest: averaged over H/8 x W/8 places the noise's own mean
has standard deviation 1/side (side = H/8), so on 16 x 16 latents (0.0625) it is as small as that
signal (√0.0047 = 0.069 times the latent's own mean). A model
trained like that can read the background from x_t instead of from the caption; at sampling time
the starting noise's mean then decides it (Lin et al. 2023, arXiv:2305.08891; the usual fix is
offset noise, diffusers' ``train_text_to_image.py --noise_offset``).

For each of ``--seeds`` starting noises, its per-channel mean is removed and the mean of one
channel at a time is shifted by ``± --shift``; every picture asks for the same background. The
result is the share of the 8 x seeds pictures whose background (read by scorer v2) is the one
asked, and how many distinct backgrounds the shifts produced: a model that follows the caption
gives 100 % and 1; a model that follows the noise gives many.

    python benchmarks/noise_mean.py --model mini --out /tmp/noise_mean.json   # or any diffusers folder
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import ROOT, load_model, save_json  # benchmarks/common.py (the script's own folder is on sys.path)

PROMPT, ASKED = "a red circle on a blue background", "blue"


def probe(pipe: Any, seeds: int = 4, shift: float = 0.25, steps: int = 25, guidance: float = 7.5) -> dict:
    """The figures above for ``pipe``, a StableDiffusionPipeline of the world (at its native size)."""
    import torch

    from sdlearn.mini import scoring

    side = pipe.unet.config.sample_size
    channels = pipe.unet.config.in_channels
    reads = []
    for seed in range(seeds):
        z = torch.randn((1, channels, side, side), generator=torch.Generator().manual_seed(seed))
        z = z - z.mean((2, 3), keepdim=True)  # the same noise, its per-channel mean removed ...
        row = []
        for c in range(channels):
            for sign in (-1.0, 1.0):
                d = torch.zeros(1, channels, 1, 1)
                d[0, c] = sign * shift  # ... then shifted along one channel
                im = pipe(PROMPT, latents=z + d, num_inference_steps=steps, guidance_scale=guidance).images[0]
                row.append(scoring.analyse(im)["background"])
        reads.append(row)
    flat = [r for row in reads for r in row]
    return {"prompt": PROMPT, "asked_background": ASKED, "seeds": seeds, "shift": shift,
            "noise_mean_std": 1.0 / side,  # of a fresh N(0, 1) draw's per-channel mean
            "background_as_asked": sum(r == ASKED for r in flat) / len(flat),
            "distinct_backgrounds": len(set(flat)), "readings": reads}


def main(argv: list[str] | None = None, pipe: Any = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help="registry name or diffusers folder")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--shift", type=float, default=0.25)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "noise_mean.json")
    args = ap.parse_args(argv)
    pipe = pipe if pipe is not None else load_model(args.model, args.threads)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    result = {"benchmark": "noise_mean", "model": args.model, **probe(pipe, args.seeds, args.shift)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    n = sum(len(row) for row in result["readings"])
    print(f"background as asked: {result['background_as_asked']:.0%}, {result['distinct_backgrounds']} distinct over {n} pictures")
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
