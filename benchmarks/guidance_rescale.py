"""Does ``guidance_rescale`` undo what high guidance does to sd-mini's pictures? (issue 12, Q3)

diffusers' ``guidance_rescale`` (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample
Steps are Flawed", arXiv:2305.08891, section 3.4) rescales the guided noise prediction towards
the standard deviation of the prompt's own prediction, against the over-exposure of high w.
Here: held-out prompts (``scoring.eval_prompts``, world seed 999; prompt i from seed i) at
w in {7.5, 15} x rescale in {0, 0.7}, the model's own scheduler, 25 steps, every picture made by
``sdlearn.sampling.sample``. Figures, each with its 95 % CI (Wilson for proportions, t for means
and for the paired differences rescale 0.7 - rescale 0 on the same prompt and seed):

* ``colour``, ``shape``: adherence read by ``sdlearn.mini.scoring`` ("none" is a wrong shape);
* ``crispness``: IoU of each object with its fitted ideal shape;
* ``saturation``: mean HSV saturation; ``clipped``: share of pixels with a channel at 0 or 255
  (the world's palette reaches neither; ground-truth renders: 0).

Usage (from the repository root):

    python benchmarks/guidance_rescale.py --n 128    # writes benchmarks/results/guidance_rescale.json

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from behaviour import LEVEL, clipped, crispness, mean, paired_diff, proportion, saturation, to_uint8  # sibling script
from common import ROOT, load_model, run_info, save_json  # benchmarks/common.py (the script's own folder is on sys.path)

GUIDANCES = (7.5, 15.0)
RESCALES = (0.0, 0.7)  # 0.7: the value the paper and diffusers' docs use


def run_setting(pipe, prompts: list[str], w: float, rescale: float, steps: int, batch: int) -> list[np.ndarray]:
    """uint8 pictures of ``prompts`` (prompt i from seed i) at guidance ``w`` and ``rescale``."""
    from sdlearn.device import make_generator
    from sdlearn.sampling import sample

    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        out += to_uint8(sample(pipe, chunk, num_inference_steps=steps, guidance_scale=w,
                               guidance_rescale=rescale, output_type="np",
                               generator=[make_generator(start + k) for k in range(len(chunk))]))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini")
    ap.add_argument("--n", type=int, default=128, help="held-out prompts per setting")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "guidance_rescale.json")
    args = ap.parse_args(argv)

    from sdlearn.mini import scoring, world

    pipe = load_model(args.model, args.threads)
    scenes = scoring.eval_prompts(args.n)
    texts = [s.caption for s in scenes]
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    truth = [world.render(s, size=size).image for s in scenes]
    t0 = time.time()
    settings, per_picture = [], {}
    for w in GUIDANCES:
        for r in RESCALES:
            t1 = time.time()
            images = run_setting(pipe, texts, w, r, args.steps, args.batch)
            scores = [scoring.score(im, text) for im, text in zip(images, texts)]
            rows = {"colour": [s["colour_ok"] for s in scores], "shape": [s["shape_ok"] for s in scores],
                    "crispness": [crispness(s) for s in scores], "saturation": [saturation(im) for im in images],
                    "clipped": [clipped(im) for im in images]}
            per_picture[(w, r)] = rows
            entry = {"w": w, "rescale": r, "colour": proportion(rows["colour"]), "shape": proportion(rows["shape"]),
                     **{k: mean(rows[k]) for k in ("crispness", "saturation", "clipped")},
                     "seconds_per_picture": round((time.time() - t1) / len(texts), 3)}
            settings.append(entry)
            print(f"w={w:g} rescale={r:g}: colour {entry['colour']['value']} {entry['colour']['ci']}, shape "
                  f"{entry['shape']['value']}, saturation {entry['saturation']['value']}, clipped "
                  f"{entry['clipped']['value']} {entry['clipped']['ci']}, {entry['seconds_per_picture']} s/picture",
                  flush=True)

    def flags(v: list) -> list:  # booleans as 0/1 for paired differences, None kept
        return [None if x is None else float(x) for x in v]

    effect = {}
    for w in GUIDANCES:
        a, b = per_picture[(w, RESCALES[1])], per_picture[(w, RESCALES[0])]
        effect[f"{w:g}"] = {k: paired_diff(flags(a[k]), flags(b[k])) for k in a}
    result = {"benchmark": "guidance_rescale", "model": args.model, "n_prompts": args.n, "steps": args.steps,
              "scheduler": type(pipe.scheduler).__name__, "batch": args.batch,
              "intervals": f"{LEVEL:.0%} CIs: Wilson for proportions, t for means and paired differences",
              "ground_truth": {"saturation": mean(saturation(im) for im in truth),
                               "clipped": mean(clipped(im) for im in truth)},
              "settings": settings,
              "effect_of_rescale": {"what": f"paired difference rescale {RESCALES[1]:g} - rescale 0, "
                                            "same prompt and seed", "by_w": effect},
              **run_info(t0, args.threads)}
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
