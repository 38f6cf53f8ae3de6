"""Fine-tune sd-mini's UNet to take extra input channels: depth2img (5) and inpainting (9).

SD 2-depth and SD-inpainting were made the same way from a text-to-image UNet: widen the first
convolution (``conv_in``) with zero-initialised input channels — so on step 0 the widened UNet
predicts exactly what the original did — and fine-tune on (latents, condition, caption) triples.

=========  ===============================================================  ==================
variant    extra channels concatenated after the 4 noisy-latent channels    diffusers pipeline
=========  ===============================================================  ==================
depth      1: the depth map at latent size, min-max scaled to [-1, 1]       Depth2Img
inpaint    5: the mask at latent size (1 = repaint) + latents of the         Inpaint
           masked picture (masked pixels set to 0 = grey)
=========  ===============================================================  ==================

    python -m sdlearn.mini.variants prepare depth --init sdlearn/data/sd-mini   # conditions for the cached latents
    python -m sdlearn.mini.variants train depth --steps 1000 --init sdlearn/data/sd-mini
    python -m sdlearn.mini.variants export depth --init sdlearn/data/sd-mini    # -> sdlearn/data/sd-mini-depth/unet

(``make sd-mini-variants`` runs all three for both variants; inpainting takes 3,000 steps.)

The text encoder, VAE, tokenizer and scheduler stay sd-mini's own, so a variant ships as a UNet only.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import UNet2DConditionModel
from tqdm.auto import tqdm

from ..depth2img import depth_condition
from ..inpainting import inpaint_condition
from ..training import copy_ema, diffusion_loss, fit, noise_scheduler, plot_losses, save
from . import world
from .recipe import (DEFAULT_WORK, TRAIN_SEED, caption_batch, _check_caption_noise, load_latents,
                     load_unet_and_text, load_vae, native_size)

EXTRA_CHANNELS = {"depth": 1, "inpaint": 5}
VAE_FACTOR = 8  # sd-mini's VAE: four blocks, three downsamplings


def _check_variant(variant: str) -> None:
    if variant not in EXTRA_CHANNELS:
        raise ValueError(f"variant must be one of {list(EXTRA_CHANNELS)}, got {variant!r}")


def training_mask(sample: world.Sample, index: int, rng: np.random.Generator) -> np.ndarray:
    """The repaint mask (H, W) in {0, 1} for training sample ``index``: the objects' own mask
    (half the time), a random rectangle (a quarter) or everything (a quarter, so the inpainting
    UNet can still draw from nothing, as SD-inpainting's recipe does).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    size = sample.image.shape[0]
    kind = index % 4
    if kind in (0, 1):
        return (sample.mask > 0).astype(np.float32)
    if kind == 3:
        return np.ones((size, size), np.float32)
    m = np.zeros((size, size), np.float32)
    h, w = rng.integers(size // 4, size * 3 // 4 + 1, size=2)
    y, x = rng.integers(0, size - h + 1), rng.integers(0, size - w + 1)
    m[y : y + h, x : x + w] = 1
    return m


def _latent_std(work: Path, init: Path | None) -> float:
    """The std the latents are divided by: ``init``'s VAE ``1 / scaling_factor`` (the scale its
    pipeline uses) when fine-tuning from a pipeline folder, else the cache's own."""
    if init is not None:
        return 1.0 / json.loads((Path(init) / "vae" / "config.json").read_text())["scaling_factor"]
    return float(torch.load(work / "latents.pt", weights_only=False, mmap=True)["std"])


@torch.no_grad()
def prepare(work: Path = DEFAULT_WORK, variant: str = "depth", batch: int = 250, progress: bool = True,
            init: Path | None = None) -> Path:
    """Compute the extra channels for every cached training latent (``latents.pt``, same order).
    ``init``: the pipeline folder the variant will be fine-tuned from (sets the latent scale).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    _check_variant(variant)
    data = torch.load(work / "latents.pt", weights_only=False)
    n, hw = data["latents"].shape[0], tuple(data["latents"].shape[-2:])
    vae = load_vae(work, prefer_finetuned=False) if variant == "inpaint" else None
    size = native_size(work)  # the pictures the latents were encoded from
    sf = 1.0 / _latent_std(work, init)  # the latent scale of the model being fine-tuned
    out = []
    for start in tqdm(range(0, n, batch), desc=f"prepare {variant}", mininterval=5, disable=not progress):
        samples = [world.sample(TRAIN_SEED, i, size) for i in range(start, min(n, start + batch))]
        if variant == "depth":
            out.append(depth_condition(torch.from_numpy(np.stack([s.depth for s in samples])), hw))
        else:
            rng = np.random.default_rng([TRAIN_SEED, start, 9])
            img = torch.from_numpy(np.stack([s.image for s in samples])).permute(0, 3, 1, 2).float() / 127.5 - 1
            m = np.stack([training_mask(s, start + k, rng) for k, s in enumerate(samples)])
            out.append(inpaint_condition(img, torch.from_numpy(m)[:, None],
                                         lambda x: vae.encode(x).latent_dist.mean * sf, VAE_FACTOR))
    path = work / f"cond_{variant}.pt"
    save(path, cond=torch.cat(out).half())  # half precision: 50k x 5 x 8 x 8 stays small
    return path


def widen_conv_in(unet: UNet2DConditionModel, extra: int) -> UNet2DConditionModel:
    """A copy of ``unet`` whose ``conv_in`` takes ``extra`` more input channels, zero-initialised,
    so its predictions are unchanged until training teaches it to use them.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    cfg = dict(unet.config)
    cfg["in_channels"] = unet.config.in_channels + extra
    wide = UNet2DConditionModel.from_config(cfg)
    state = unet.state_dict()
    w = state["conv_in.weight"]
    state["conv_in.weight"] = torch.cat([w, w.new_zeros(w.shape[0], extra, *w.shape[2:])], dim=1)
    wide.load_state_dict(state)
    return wide


def train(work: Path = DEFAULT_WORK, variant: str = "depth", steps: int = 3000, batch: int = 64,
          lr: float = 3e-4, cond_drop: float = 0.1, ema_decay: float = 0.998, ckpt_every: int = 250,
          seed: int = 0, progress: bool = True, init: Path | None = None,
          snr_gamma: float | None = 5.0, caption_noise: float = 0.0) -> Path:
    """Fine-tune the widened UNet (text encoder frozen) on noise prediction with Min-SNR-5
    weighting (``snr_gamma``; v1's loss, which these fine-tunes kept: the base model's own
    ``recipe.train_unet`` uses plain MSE). ``caption_noise`` q: that share of the kept captions
    swapped for another picture's, as in the base model's last leg (``recipe.caption_batch``).
    ``init``: start from a pipeline folder (e.g. the shipped ``sdlearn/data/sd-mini``) instead of
    ``work/unet.pt``, so the variants are fine-tuned from exactly the weights that ship.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    _check_variant(variant)
    _check_caption_noise(caption_noise)
    latents, input_ids, uncond = load_latents(work, _latent_std(work, init))
    cond = torch.load(work / f"cond_{variant}.pt", weights_only=False)["cond"]
    base, te = load_unet_and_text(work, init=init)  # the shipped (EMA) weights are the starting point
    te.requires_grad_(False).eval()
    unet = widen_conv_in(base, EXTRA_CHANNELS[variant])
    sched, ck = noise_scheduler(), work / f"unet_{variant}.pt"

    def step_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step + 77)
        idx, x0, ids = caption_batch(latents, input_ids, uncond, batch, cond_drop, gen,  # CFG still needs ""
                                    caption_noise)
        return diffusion_loss(unet, te, x0, ids, sched, gen, snr_gamma=snr_gamma, extra=cond[idx].float())

    # A shorter warm-up than from scratch: all but conv_in's new (zero) columns start trained.
    log = fit(step_fn, list(unet.parameters()), steps, lr=lr, warmup=100, ema_decay=ema_decay,
              modules={"unet": unet}, ckpt=ck, ckpt_every=ckpt_every, progress=progress,
              desc=f"unet-{variant}")["log"]
    plot_losses(log, "loss", work / f"unet_{variant}_loss.png", f"{variant} UNet fine-tune: noise MSE")
    return ck


def export(work: Path = DEFAULT_WORK, variant: str = "depth", out: Path | None = None,
           init: Path | None = None) -> Path:
    """Write the EMA UNet (fp16 safetensors, loaded back as fp32) to ``sdlearn/data/sd-mini-<variant>``.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    import shutil

    _check_variant(variant)
    out = Path(out) if out else Path(__file__).parent.parent / "data" / f"sd-mini-{variant}"
    base, _ = load_unet_and_text(work, init=init)  # only its config: every weight is the EMA's
    unet = widen_conv_in(base, EXTRA_CHANNELS[variant])
    copy_ema(unet.parameters(), torch.load(work / f"unet_{variant}.pt", weights_only=False)["ema"])
    card = (out / "README.md").read_text() if (out / "README.md").exists() else None
    if out.exists():
        shutil.rmtree(out)
    unet.half().save_pretrained(out / "unet", safe_serialization=True)
    png = work / f"unet_{variant}_loss.png"
    if png.exists():
        shutil.copy(png, out / png.name)
    if card is not None:  # the folder's model card is written by hand: keep it
        (out / "README.md").write_text(card)
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m sdlearn.mini.variants STAGE VARIANT``, what ``make sd-mini-variants`` runs.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    p = argparse.ArgumentParser(prog="python -m sdlearn.mini.variants", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["prepare", "train", "export"])
    p.add_argument("variant", choices=list(EXTRA_CHANNELS))
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--init", type=Path, default=None, help="the pipeline folder to fine-tune from (default: work/unet.pt)")
    p.add_argument("--caption-noise", type=float, default=0.0, help="train: share of captions swapped for another picture's")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.stage == "prepare":
        print(prepare(a.work, a.variant, init=a.init))
    elif a.stage == "train":
        train(a.work, a.variant, steps=a.steps, init=a.init, caption_noise=a.caption_noise)
    else:
        print(export(a.work, a.variant, a.out, a.init))
    print(json.dumps({"stage": a.stage, "variant": a.variant, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
