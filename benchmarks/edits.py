"""How well do image-conditioned edits obey the prompt and keep what they should? (issue 5's report)

Held-out scenes of sd-mini's world (seed 999) with one object. Each is edited by a prompt that
asks for *other colours* (object and background) with the same shape; one seed per scene.

* **depth** (strength 1.0, the scene's depth map): ``mini-depth`` vs ``img2img`` with sd-mini's
  ordinary UNet at the same strength. Figures: colour/background as asked (``sdlearn.mini.scoring``),
  and ``structure_iou`` — the layout kept (IoU of the picture's foreground with the depth's near
  region; the ground-truth renders score ~0.95).
* **inpaint** (mask = the object's own mask grown to whole 8x8 blocks, and as drawn; background
  kept): the 4-channel re-blending loop with sd-mini (``mini``) vs the 9-channel ``mini-inpaint``.
  Figures: the object recoloured as asked, the background still the scene's, PSNR outside the
  mask (8 px margin, which leaves the seam out) against the VAE round trip's.

Usage (from the repository root):

    python benchmarks/edits.py --n 100            # writes benchmarks/results/edits.json

Introduced in notebooks/08_depth2img.ipynb.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, save_json  # benchmarks/common.py (the script's own folder is on sys.path)


def scenes(n: int, seed: int = 999, size: int = 128) -> list:
    """``n`` one-object held-out samples at ``size`` px and two prompts with another object
    colour: with another background too (for depth2img) and with the scene's own background (for
    inpainting)."""
    from sdlearn.mini import world

    out, i = [], 0
    while len(out) < n:
        s = world.sample(seed, i, size)
        i += 1
        if len(s.scene.objects) != 1:
            continue
        rng = np.random.default_rng([seed, i, 5])
        obj = s.scene.objects[0]
        colours = [c for c in world.COLOURS if c not in (obj.colour, s.scene.background)]
        new_obj = rng.choice(colours)
        bg = rng.choice([c for c in colours if c != new_obj])
        out.append((s, f"a {new_obj} {obj.shape} on {world._article(str(bg))} {bg} background",
                    f"a {new_obj} {obj.shape} on {world._article(s.scene.background)} {s.scene.background} background"))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "edits.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from PIL import Image

    from sdlearn.depth2img import depth2img, structure_iou
    from sdlearn.device import make_generator
    from sdlearn.img2img import img2img
    from sdlearn.inpainting import block_mask, inpaint, psnr_outside
    from sdlearn.latents import encode
    from sdlearn.models import load_pipeline
    from sdlearn.sampling import decode
    from sdlearn.mini.scoring import score

    pipes = {k: load_pipeline(m, task=t) for k, (m, t) in {
        "img2img": ("mini", "img2img"), "depth": ("mini-depth", None),
        "blend": ("mini", "inpaint"), "nine": ("mini-inpaint", None)}.items()}
    for p in pipes.values():
        p.set_progress_bar_config(disable=True)
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance)
    rows = {k: [] for k in pipes}
    vae_ceiling = []
    t0 = time.time()
    native = pipes["img2img"].unet.config.sample_size * pipes["img2img"].vae_scale_factor
    for k, (s, depth_prompt, paint_prompt) in enumerate(scenes(args.n, size=native)):
        image, depth = Image.fromarray(s.image), torch.from_numpy(s.depth)[None]
        drawn = Image.fromarray(s.mask)
        mask = block_mask(drawn, 8)
        gen = lambda: make_generator(k)  # noqa: E731
        for name, pic in (("img2img", img2img(pipes["img2img"], depth_prompt, image, strength=1.0, generator=gen(), **kw)[0]),
                          ("depth", depth2img(pipes["depth"], depth_prompt, image, depth, strength=1.0, generator=gen(), **kw)[0])):
            sc = score(pic, depth_prompt)
            rows[name].append({"colour": bool(sc["colour_ok"]), "background": bool(sc["background_ok"]),
                               "shape": bool(sc["shape_ok"]), "iou": structure_iou(pic, depth)})
        for name in ("blend", "nine"):
            for suffix, m in (("", mask), (", mask as drawn", drawn)):
                pic = inpaint(pipes[name], paint_prompt, image, m, generator=gen(), **kw)[0]
                sc = score(pic, paint_prompt)
                rows.setdefault(name + suffix, []).append(
                    {"colour": bool(sc["colour_ok"]), "background": bool(sc["background_ok"]),
                     "psnr_outside": psnr_outside(image, pic, m, margin=8)})
        with torch.no_grad():
            rt = decode(pipes["blend"], encode(pipes["blend"].vae, image), "pil")[0]
        vae_ceiling.append(psnr_outside(image, rt, mask, margin=8))
    summary = {name: {key: round(float(np.mean([r[key] for r in rs])), 4) for key in rs[0]}
               for name, rs in rows.items()}
    result = {"n": args.n, "steps": args.steps, "guidance": args.guidance, "seconds": round(time.time() - t0, 1),
              "depth_task": "strength 1.0, recoloured object and background, same shape",
              "inpaint_task": "object mask (block_mask; and as drawn), recoloured object, background kept",
              "summary": summary, "vae_round_trip_psnr_outside": round(float(np.mean(vae_ceiling)), 2),
              "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads}
    print(json.dumps(result["summary"], indent=1), "VAE ceiling", result["vae_round_trip_psnr_outside"])
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
