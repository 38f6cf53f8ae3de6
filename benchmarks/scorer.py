"""How well scorer v2 reads the sd-mini world: clean renders, degraded renders, and both again
after a VAE round trip (what every generated picture goes through last).

For each set of held-out pictures (world seed 999): the share of pictures whose every drawn
object is read with the right colour, shape and position, background colour and style, object
count, and the share of drawn objects rejected (read as "none" or not found). Targets (sd-mini
v2 issue): clean >= 98 % on every attribute; each degradation rejected >= 90 %.

    python benchmarks/scorer.py --vae sdlearn/data/sd-mini/vae --out benchmarks/results/scorer.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from sdlearn.mini import degrade, scoring

from common import ROOT, save_json  # benchmarks/common.py (the script's own folder is on sys.path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=300, help="held-out pictures per set")
    p.add_argument("--vae", type=Path, default=ROOT / "sdlearn/data/sd-mini/vae",
                   help="a diffusers AutoencoderKL folder for the round trips ('' to skip them)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/scorer.json")
    a = p.parse_args()
    torch.set_num_threads(1)
    vae = None
    if str(a.vae):
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(a.vae).eval()
    t0 = time.time()
    sets: dict[str, dict] = {}
    for name, corrupt in [("clean", None), *sorted(degrade.DEGRADATIONS.items())]:
        for rt in ([False, True] if vae is not None else [False]):
            key = name + (" + VAE round trip" if rt else "")
            sets[key] = scoring.checker_accuracy(n=a.n, corrupt=corrupt, vae=vae if rt else None)
            print(f"{key:32s}", {k: round(v, 3) for k, v in sets[key].items() if k != "n"}, flush=True)
    result = {
        "n": a.n, "seed": 999, "vae": str(Path(a.vae).resolve().relative_to(ROOT)) if vae is not None else None,
        "thresholds": {"MAX_ERR": scoring.MAX_ERR, "MARGIN": scoring.MARGIN, "MAX_EDGE": scoring.MAX_EDGE,
                       "MIN_PURITY": scoring.MIN_PURITY, "MIN_AREA": scoring.MIN_AREA},
        "sets": sets,
        "targets": {"clean, every attribute": ">= 0.98", "each degradation rejected": ">= 0.90"},
        "met": {"clean": all(v >= 0.98 for k, v in sets["clean"].items() if k not in ("n", "rejected")),
                "degraded": all(s["rejected"] >= 0.9 for k, s in sets.items()
                                if k.split(" ")[0] in degrade.DEGRADATIONS and "round trip" not in k)},
        "seconds": round(time.time() - t0, 1),
    }
    save_json(a.out, result)


if __name__ == "__main__":
    main()
