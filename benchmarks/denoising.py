"""How well does a model denoise held-out world pictures? A fast probe of what sampling will draw.

For ``--n`` held-out world v2 pictures (world seed 999) encoded by the model's own VAE, noised
to each timestep t with one fixed noise draw, and captioned with their own captions:

- ``eps_mse``: SD's training loss at t, ``mean((ε̂ - ε)²)``, over all pictures, per background
  style, and for the plainest ones (flat background, one object);
- ``x0``: the one-step prediction x̂₀ = (x_t - √(1-ᾱ_t) ε̂) / √ᾱ_t, decoded and read by scorer
  v2: the share whose shape is named right ("none" wrong) and the mean crispness of the largest
  object. At t = 0 this is the VAE round trip, the ceiling.
- ``caption_gain``: how much the caption helps, ``1 - eps_mse / eps_mse(empty caption "")``: 0
  when the model ignores the text (sd-mini v2's 64 px stage: 22-25 % at t = 600-800).
- ``latent_blur``: the VAE alone. The clean latents with a 3x3 box blur mixed in (25, 50,
  100 %), decoded and read the same way. A UNet's prediction of an uncertain shape is a smoothed
  latent; if a smoothed star decodes to a clean circle, sampling has nothing to pull it back to
  the star (sd-mini v2's VAE at 128 px: 90 % named right clean, 42 % half-blurred).

It needs no sampling loop, so it costs seconds, and it shows where along t a model loses the
shape: a model whose x̂₀ at t = 200 is already a blob cannot sample crisp shapes.

    python benchmarks/denoising.py --model mini --out /tmp/probe.json   # or any diffusers folder
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from common import ROOT, load_model, save_json

TIMESTEPS = (0, 100, 200, 400, 600, 800)
BLUR_MIX = (0.25, 0.5, 1.0)
REFINE = (0.08, 0.12, 0.2, 0.3, 0.5)  # img2img strengths: 25 DDIM steps from t = 41, 81, 161, 241, 441


def _read(pipe: Any, z: Any, samples: list, batch: int) -> dict:
    """Decode latents ``z`` and read them with scorer v2: shapes named right ("none" wrong), and
    the mean crispness and median outline error of the largest object."""
    import torch

    from sdlearn.latents import decode
    from sdlearn.mini import scoring

    pics = torch.cat([decode(pipe.vae, z[i:i + batch]) for i in range(0, len(z), batch)])
    pics = ((pics.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    scores = [scoring.score(p, s.caption) for p, s in zip(pics, samples)]  # one reading a picture
    shape = [r["shape_ok"] for r in scores if r["shape_ok"] is not None]
    objs = [r["reading"]["objects"] for r in scores]
    return {"shape_named_right": float(np.mean(shape)), "shape_n": len(shape),
            "crispness": float(np.mean([o[0]["crispness"] for o in objs if o])),
            "outline_error": float(np.median([o[0]["err"] for o in objs if o]))}


def refine_latents(pipe: Any, z0: Any, noise: Any, emb: Any, strength: float, steps: int = 25,
                   batch: int = 64) -> tuple[int, Any]:
    """img2img from the clean latents ``z0``: noised with ``noise`` to the first timestep that
    ``strength`` runs (of ``steps`` DDIM steps), then the model's own DDIM steps with the captions' ``emb``
    at w = 1 down to t = 0. Returns (that first timestep, the final latents)."""
    from types import SimpleNamespace

    import torch
    from diffusers import DDIMScheduler

    from sdlearn.img2img import start_timesteps
    from sdlearn.sampling import denoise

    sched = DDIMScheduler.from_config(pipe.scheduler.config)  # deterministic: the same start, the same end
    sched.set_timesteps(steps)
    t_start, timesteps = start_timesteps(sched, steps, strength)
    zt = sched.add_noise(z0, noise, timesteps[:1].repeat(len(z0)))  # (N, 4, h, w) x_t
    runner = SimpleNamespace(unet=pipe.unet, scheduler=sched)  # denoise needs only these two
    z = torch.cat([denoise(runner, zt[i:i + batch], emb[i:i + batch], 1.0, start_step=t_start)
                   for i in range(0, len(zt), batch)])
    return int(timesteps[0]), z


def probe(pipe: Any, n: int = 192, timesteps: Sequence[int] = TIMESTEPS, seed: int = 0, batch: int = 64,
          size: int | None = None, refine: Sequence[float] = REFINE) -> dict:
    """The figures above for ``pipe`` (a StableDiffusionPipeline over world v2), at its native size."""
    import torch
    import torch.nn.functional as F

    from sdlearn.mini import world
    from sdlearn.personalisation import concept_data

    size = size or pipe.unet.config.sample_size * pipe.vae_scale_factor  # the model's native size
    samples = [world.sample(999, i, size) for i in range(n)]
    styles = np.array([s.scene.style for s in samples])
    plain = np.array([s.scene.style == "flat" and len(s.scene.objects) == 1 for s in samples])
    data = concept_data(pipe, [s.image for s in samples], [s.caption for s in samples])  # latents, ids
    z0, ids = data.latents, data.input_ids  # (N, 4, size/8, size/8), (N, 77)
    out: dict = {"n": n, "plain_n": int(plain.sum()), "styles": {k: int((styles == k).sum()) for k in sorted(set(styles))},
                 "timesteps": []}
    with torch.no_grad():
        emb = torch.cat([pipe.text_encoder(ids[i:i + batch])[0] for i in range(0, n, batch)])
        empty = pipe.tokenizer([""], padding="max_length", max_length=ids.shape[1], return_tensors="pt").input_ids
        emb_empty = pipe.text_encoder(empty)[0]  # (1, 77, D), the unconditional branch
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
        for t in timesteps:
            abar = pipe.scheduler.alphas_cumprod[t]
            zt = abar.sqrt() * z0 + (1 - abar).sqrt() * noise
            eps = torch.cat([pipe.unet(zt[i:i + batch], torch.full((len(zt[i:i + batch]),), t),
                                       encoder_hidden_states=emb[i:i + batch]).sample for i in range(0, n, batch)])
            eps_empty = torch.cat([pipe.unet(zt[i:i + batch], torch.full((len(zt[i:i + batch]),), t),
                                             encoder_hidden_states=emb_empty.expand(len(zt[i:i + batch]), -1, -1)).sample
                                   for i in range(0, n, batch)])
            x0 = z0 if t == 0 else (zt - (1 - abar).sqrt() * eps) / abar.sqrt()
            err = ((eps - noise) ** 2).mean((1, 2, 3)).numpy()
            err_empty = float(((eps_empty - noise) ** 2).mean())
            out["timesteps"].append({
                "t": int(t),
                "eps_mse": {"all": float(err.mean()), "plain": float(err[plain].mean()),
                            **{k: float(err[styles == k].mean()) for k in sorted(set(styles))}},
                "caption_gain": float(1 - err.mean() / err_empty) if t > 0 else None,
                "x0": _read(pipe, x0, samples, batch)})
        blurred = F.avg_pool2d(z0, 3, stride=1, padding=1, count_include_pad=False)  # (N, 4, h, w)
        out["latent_blur"] = [{"mix": a, **_read(pipe, (1 - a) * z0 + a * blurred, samples, batch)}
                              for a in BLUR_MIX]
        out["refine"] = []
        for s in refine:
            t_start, z = refine_latents(pipe, z0, noise, emb, s, batch=batch)
            out["refine"].append({"strength": s, "t_start": t_start, **_read(pipe, z, samples, batch)})
    return out


def main(argv: list[str] | None = None, pipe: Any = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help="registry name or diffusers folder")
    ap.add_argument("--n", type=int, default=192)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "denoising.json")
    args = ap.parse_args(argv)
    pipe = pipe if pipe is not None else load_model(args.model, args.threads)
    t0 = time.perf_counter()
    result = {"benchmark": "denoising", "model": args.model,
              "size": pipe.unet.config.sample_size * pipe.vae_scale_factor, **probe(pipe, args.n)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    for row in result["timesteps"]:
        gain = "" if row["caption_gain"] is None else f", caption gain {row['caption_gain']:.1%}"
        print(f"t={row['t']:4d}  eps MSE {row['eps_mse']['all']:.4f} (plain {row['eps_mse']['plain']:.4f}{gain})  "
              f"x0: shape {row['x0']['shape_named_right']:.0%}, crispness {row['x0']['crispness']:.3f}, "
              f"outline error {row['x0']['outline_error']:.2f} px")
    for row in result["latent_blur"]:
        print(f"VAE alone, latents {row['mix']:.0%} blurred: shape {row['shape_named_right']:.0%}, "
              f"crispness {row['crispness']:.3f}, outline error {row['outline_error']:.2f} px")
    for row in result["refine"]:
        print(f"img2img from the ground truth, strength {row['strength']} (t = {row['t_start']}): shape "
              f"{row['shape_named_right']:.0%}, crispness {row['crispness']:.3f}, outline error {row['outline_error']:.2f} px")
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
