"""sd-mini's quality and speed figures (reported in sdlearn/data/sd-mini/README.md).

- VAE reconstruction PSNR on held-out world images (seed 999) and on a held-out photo (the
  scikit-image cat, never seen in training) at 512x512 -> 4x64x64 -> 512x512.
- Speed: one native-size image, 25 steps with classifier-free guidance, one CPU thread.
- The ratio of one UNet step (batch 2, as CFG runs it) of the full SD 1.5 architecture (random
  weights, built from its public config, no download) to one sd-mini UNet step, same CPU.

    python benchmarks/sd_mini.py --out benchmarks/results/sd_mini.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from sdlearn.mini import world
from sdlearn.device import make_generator
from sdlearn.images import demo_image
from sdlearn.models import load_pipeline
from sdlearn.mini.recipe import HELDOUT_SEED, psnr

from common import save_json  # benchmarks/common.py (the script's own folder is on sys.path)


def _to_tensor(imgs: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.no_grad()
def vae_psnr(pipe, n: int = 256) -> dict:
    vae = pipe.vae
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # held-out pictures at the native size
    imgs = world.pictures(HELDOUT_SEED, n, size=size)
    x = _to_tensor(imgs)
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 64]).latent_dist.mean).sample for i in range(0, n, 64)])
    cat = _to_tensor(np.asarray(demo_image("cat"))[None])
    z = vae.encode(cat).latent_dist.mean
    rec_cat = vae.decode(z).sample
    return {"world_psnr_db": round(psnr(rec, x), 2), "world_n": n,
            "photo_psnr_db": round(psnr(rec_cat, cat), 2), "photo_latent_shape": list(z.shape[1:])}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def speed(pipe, repeats: int = 5) -> dict:
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    pipe.set_progress_bar_config(disable=True)
    t_img = _time(lambda: pipe("a red circle", height=size, width=size, num_inference_steps=25,
                               guidance_scale=7.5, generator=make_generator(0)), repeats)
    u = pipe.unet
    lat = torch.randn(2, u.config.in_channels, u.config.sample_size, u.config.sample_size)
    cond = torch.randn(2, 77, u.config.cross_attention_dim)
    t_mini = _time(lambda: u(lat, 500, encoder_hidden_states=cond), repeats * 4)

    from diffusers import UNet2DConditionModel

    from sdlearn.unet import SD15_UNET_CONFIG

    big = UNet2DConditionModel(**SD15_UNET_CONFIG).eval()
    lat = torch.randn(2, 4, 64, 64)
    cond = torch.randn(2, 77, 768)
    t_big = _time(lambda: big(lat, 500, encoder_hidden_states=cond), 1)
    return {"image_25_steps_cfg_s": round(t_img, 3), "size": size, "threads": torch.get_num_threads(),
            "unet_step_mini_s": round(t_mini, 5), "unet_step_sd15_s": round(t_big, 3),
            "sd15_over_mini": round(t_big / t_mini, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="mini")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--skip-sd15", action="store_true", help="skip the (slow, 3.4 GB) SD 1.5 UNet timing")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load_pipeline(a.model)
    res = {"model": a.model, **vae_psnr(pipe)}
    if not a.skip_sd15:
        res.update(speed(pipe))
    print(json.dumps(res, indent=2))
    if a.out:
        save_json(a.out, res, indent=2)


if __name__ == "__main__":
    main()
