"""Training code for sd-mini: the VAE, then the text encoder + UNet on cached latents.

The recipe that made the shipped model is ``make sd-mini`` (see sdlearn/data/sd-mini/README.md);
every stage checkpoints to ``--work`` and resumes from there, so an interrupted run loses little.

    python -m sdlearn.mini.recipe vae     --steps 6000   # AutoencoderKL on world images + photo crops
    python -m sdlearn.mini.recipe latents --n 60000      # encode the training world once
    python -m sdlearn.mini.recipe unet    --steps 8000   # CLIPTextModel + UNet2DConditionModel, CFG dropout
    python -m sdlearn.mini.recipe export                 # diffusers folder -> sdlearn/data/sd-mini

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import world
from ..latents import psnr
from .configs import mini_components

TRAIN_SEED, HELDOUT_SEED = 1, 999  # world seeds: training data vs evaluation prompts
DEFAULT_WORK = Path("data/train-work")


# ----------------------------------------------------------------------------- data
def photo_pool(size: int = 256) -> list[np.ndarray]:
    """Natural photos bundled with scikit-image (public domain / CC0), resized to short side ``size``.

    ``chelsea`` is held out for evaluation. Needs the optional ``scikit-image`` (the ``train`` extra).
    """
    from PIL import Image
    from skimage import data as skdata

    out = []
    for name in ("astronaut", "coffee", "rocket", "stereo_motorcycle", "hubble_deep_field", "retina"):
        arr = getattr(skdata, name)()
        img = Image.fromarray(arr[0] if isinstance(arr, tuple) else arr).convert("RGB")
        for side in (size, size * 2):
            scale = side / min(img.size)
            out.append(np.asarray(img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)))
    return out


def vae_batch(rng: np.random.Generator, step: int, batch: int, crop: int, photos: list[np.ndarray],
              photo_frac: float) -> torch.Tensor:
    """A (B, 3, crop, crop) batch in [-1, 1]: random crops of world images and of photos."""
    imgs = []
    for k in range(batch):
        if photos and rng.random() < photo_frac:
            p = photos[rng.integers(len(photos))]
            y, x = rng.integers(p.shape[0] - crop + 1), rng.integers(p.shape[1] - crop + 1)
            imgs.append(p[y : y + crop, x : x + crop])
        else:
            im = world.sample(TRAIN_SEED, step * batch + k).image
            y, x = rng.integers(64 - crop + 1), rng.integers(64 - crop + 1)
            imgs.append(im[y : y + crop, x : x + crop])
    arr = np.stack(imgs).astype(np.float32) / 127.5 - 1.0
    if rng.random() < 0.5:  # horizontal flip: free augmentation for the photos and shapes alike
        arr = arr[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- checkpoints
def _save(path: Path, **state) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # atomic: an interrupted save never corrupts the last good checkpoint


def plot_losses(log: list[dict], key: str, path: Path, title: str) -> None:
    """Save a loss curve (raw and smoothed, log scale) as a PNG.

    Draws on a bare ``matplotlib.figure.Figure``: no pyplot, so no backend switch that would turn
    off inline plots in a notebook that trains.
    """
    from matplotlib.figure import Figure

    steps = np.array([r["step"] for r in log])
    vals = np.array([r[key] for r in log])
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, vals, alpha=0.3, lw=0.8)
    k = max(1, len(vals) // 50)
    if len(vals) > k:
        ax.plot(steps[k - 1 :], np.convolve(vals, np.ones(k) / k, mode="valid"), lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)


def _lr(step: int, total: int, base: float, warmup: int = 200) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))


# ----------------------------------------------------------------------------- VAE
def train_vae(work: Path = DEFAULT_WORK, steps: int = 5000, batch: int = 32, crop: int = 32,
              lr: float = 1e-3, kl_weight: float = 1e-6, photo_frac: float = 0.1,
              ckpt_every: int = 250, seed: int = 0, decoder_only: bool = False,
              progress: bool = True) -> Path:
    """Train the AutoencoderKL with L1 + MSE reconstruction and a tiny KL term (as SD's VAE).

    The VAE is fully convolutional (plus attention at the bottleneck), so training on 32x32
    crops teaches the same ×8 code as full images, four times cheaper per sample.

    ``decoder_only=True`` is the second stage (``vae-ft``): starting from ``vae.pt``, the encoder
    is frozen — so the latent space, and any latents already cached for the UNet, stay valid —
    and only the decoder is fine-tuned, on full 64x64 pictures. Stability AI sharpened SD's
    decoder the same way (the "ft-MSE" VAE).
    """
    torch.manual_seed(seed)
    vae = mini_components()["vae"]
    ck = work / ("vae_ft.pt" if decoder_only else "vae.pt")
    if decoder_only:
        vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
        vae.encoder.requires_grad_(False), vae.quant_conv.requires_grad_(False)
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    start, log = 0, []
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        start, log = st["step"], st["log"]
    photos = photo_pool() if photo_frac > 0 else []
    vae.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc=ck.stem, mininterval=5,
               disable=not progress)
    for step in bar:
        rng = np.random.default_rng([seed, step, int(decoder_only)])
        x = vae_batch(rng, step, batch, crop, photos, photo_frac)
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        if decoder_only:
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mean  # what the UNet learns to produce
            rec, kl = vae.decode(z).sample, torch.zeros(())
        else:
            post = vae.encode(x).latent_dist
            rec, kl = vae.decode(post.sample()).sample, post.kl().mean()
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.append({"step": step, "loss": loss.item(), "psnr": psnr(rec.detach(), x)})
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{np.mean([r['psnr'] for r in log[-50:]]):.1f}")
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            _save(ck, model=vae.state_dict(), opt=opt.state_dict(), step=step + 1, log=log)
    plot_losses(log, "loss", work / f"{ck.stem}_loss.png", f"VAE{' decoder fine-tune' if decoder_only else ''}: L1 + MSE + KL")
    return ck


# ----------------------------------------------------------------------------- latents
def load_vae(work: Path = DEFAULT_WORK, prefer_finetuned: bool = True):
    """The trained VAE; its decoder fine-tuned (``vae_ft.pt``) if that stage has run."""
    vae = mini_components()["vae"]
    ft = work / "vae_ft.pt"
    path = ft if prefer_finetuned and ft.exists() else work / "vae.pt"
    vae.load_state_dict(torch.load(path, weights_only=False)["model"])
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_world(work: Path = DEFAULT_WORK, n: int = 50000, batch: int = 250, progress: bool = True) -> Path:
    """Encode ``n`` training-world images once (latent means) and tokenize their captions.

    Also measures the latents' standard deviation: ``scaling_factor = 1 / std`` makes the
    UNet's inputs unit-variance, which is exactly how SD's 0.18215 was chosen.
    """
    vae = load_vae(work, prefer_finetuned=False)  # the encoder is the same in both stages
    tok = mini_components()["tokenizer"]
    lat, ids = [], []
    for start in tqdm(range(0, n, batch), desc="encode", mininterval=5, disable=not progress):
        imgs, caps = world.batch(TRAIN_SEED, start, min(batch, n - start))
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat.append(vae.encode(x).latent_dist.mean)
        ids.append(tok(caps, padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt").input_ids.to(torch.int32))
    latents, input_ids = torch.cat(lat), torch.cat(ids)
    std = latents.std().item()
    out = work / "latents.pt"
    _save(out, latents=latents, input_ids=input_ids, std=std, mean=latents.mean().item(),
          uncond_ids=tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids)
    print(f"latents {tuple(latents.shape)} std={std:.4f} -> scaling_factor={1 / std:.5f}")
    return out


# ----------------------------------------------------------------------------- UNet + text
def noise_scheduler():
    from diffusers import DDPMScheduler

    from ..architectures import SD15_SCHEDULER

    keys = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type")
    return DDPMScheduler(**{k: SD15_SCHEDULER[k] for k in keys})


def diffusion_loss(unet, text_encoder, latents: torch.Tensor, input_ids: torch.Tensor, sched,
                   gen: torch.Generator, snr_gamma: float | None = 5.0,
                   extra: torch.Tensor | None = None) -> torch.Tensor:
    """SD's training objective: predict the noise added at a random timestep.

    With ``snr_gamma`` each timestep's loss is weighted by min(SNR, γ)/SNR ("Min-SNR", Hang et
    al. 2023): low-noise steps, easy and numerous, stop dominating, and training converges
    several times faster. ``snr_gamma=None`` gives SD's plain MSE. ``extra`` channels (a depth
    map, a mask + masked-picture latents) are concatenated to the noisy latents, never noised.
    """
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    noisy = sched.add_noise(latents, noise, t)  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    cond = text_encoder(input_ids)[0]  # (B, 77, hidden)
    inp = noisy if extra is None else torch.cat([noisy, extra], dim=1)
    pred = unet(inp, t, encoder_hidden_states=cond).sample
    per_sample = (pred - noise).pow(2).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        abar = sched.alphas_cumprod[t]
        snr = abar / (1 - abar)
        per_sample = per_sample * torch.clamp(snr, max=snr_gamma) / snr
    return per_sample.mean()


def ema_update_step(opt, params: list, loss: torch.Tensor, ema: list, ema_decay: float, log: list,
                    step: int, bar) -> None:
    """One optimiser step (gradients clipped to norm 1), the EMA update and the log line: shared
    by the UNet training here and the fine-tunes of ``sdlearn.mini.variants``."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    with torch.no_grad():
        for e, p in zip(ema, params):
            e.lerp_(p.detach(), 1 - ema_decay)  # the shipped weights are this running average
    log.append({"step": step, "loss": loss.item()})
    if step % 50 == 0:
        bar.set_postfix(loss=f"{np.mean([r['loss'] for r in log[-50:]]):.4f}")


def train_unet(work: Path = DEFAULT_WORK, steps: int = 6000, batch: int = 64, lr: float = 6e-4,
               cond_drop: float = 0.1, ema_decay: float = 0.999, ckpt_every: int = 250,
               seed: int = 0, progress: bool = True) -> Path:
    """Train the text encoder and UNet jointly on cached latents, with caption dropout.

    ``cond_drop`` (10 %) replaces the caption by "" so the same network also learns the
    unconditional prediction that classifier-free guidance extrapolates away from.
    """
    data = torch.load(work / "latents.pt", weights_only=False)
    latents = data["latents"] / data["std"]  # scaled to unit variance, as the pipeline expects
    input_ids, uncond = data["input_ids"].long(), data["uncond_ids"].long()
    torch.manual_seed(seed)
    comps = mini_components(seed)
    unet, te = comps["unet"], comps["text_encoder"]
    params = list(unet.parameters()) + list(te.parameters())
    # No weight decay: AdamW would shrink the ~49k embedding rows that no caption ever uses.
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    sched, ck = noise_scheduler(), work / "unet.pt"
    start, log = 0, []
    if ck.exists():
        st = torch.load(ck, weights_only=False)
        unet.load_state_dict(st["unet"]), te.load_state_dict(st["text_encoder"]), opt.load_state_dict(st["opt"])
        ema, start, log = st["ema"], st["step"], st["log"]
    unet.train(), te.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="unet", mininterval=5,
               disable=not progress)
    for step in bar:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, latents.shape[0], (batch,), generator=gen)
        ids = input_ids[idx].clone()
        drop = torch.rand(batch, generator=gen) < cond_drop
        ids[drop] = uncond
        for g in opt.param_groups:
            g["lr"] = _lr(step, steps, lr)
        loss = diffusion_loss(unet, te, latents[idx], ids, sched, gen)
        ema_update_step(opt, params, loss, ema, ema_decay, log, step, bar)
        if (step + 1) % ckpt_every == 0 or step + 1 == steps:
            _save(ck, unet=unet.state_dict(), text_encoder=te.state_dict(), opt=opt.state_dict(),
                  ema=ema, step=step + 1, log=log)
    plot_losses(log, "loss", work / "unet_loss.png", "UNet: min-SNR weighted noise MSE")
    return ck


# ----------------------------------------------------------------------------- export
def export(work: Path = DEFAULT_WORK, out: Path | None = None, use_ema: bool = True) -> Path:
    """Write the diffusers folder (safetensors) that ``load_pipeline("mini")`` loads."""
    import shutil

    from diffusers import StableDiffusionPipeline

    out = Path(out) if out else Path(__file__).parent.parent / "data" / "sd-mini"
    comps = mini_components()
    comps["vae"] = load_vae(work)
    data = torch.load(work / "latents.pt", weights_only=False)
    # Round the measured factor like SD's 0.18215; written into the VAE config the pipeline reads.
    comps["vae"].register_to_config(scaling_factor=round(1.0 / data["std"], 5))
    st = torch.load(work / "unet.pt", weights_only=False)
    comps["unet"].load_state_dict(st["unet"]), comps["text_encoder"].load_state_dict(st["text_encoder"])
    if use_ema:
        params = list(comps["unet"].parameters()) + list(comps["text_encoder"].parameters())
        with torch.no_grad():
            for p, e in zip(params, st["ema"]):
                p.copy_(e)
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    if out.exists():
        shutil.rmtree(out)
    pipe.save_pretrained(out, safe_serialization=True)
    # Ship the tokenizer as the same vocab.json + merges.txt (+ the CLIP licence) as the package's
    # own copy: 1.5 MB instead of a 3.6 MB tokenizer.json, and it loads with any transformers.
    from ..architectures import tokenizer_dir

    shutil.rmtree(out / "tokenizer")
    shutil.copytree(tokenizer_dir(), out / "tokenizer")
    for png in ("vae_loss.png", "vae_ft_loss.png", "unet_loss.png"):
        if (work / png).exists():
            shutil.copy(work / png, out / png)
    return out


# ----------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sdlearn.mini.recipe", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["vae", "vae-ft", "latents", "unet", "export"])
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=None, help="latents: how many world images to encode")
    p.add_argument("--out", type=Path, default=None, help="export: folder (default: the package's sd-mini)")
    p.add_argument("--photo-frac", type=float, default=0.1, help="vae: share of photo crops in a batch")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    steps = {"steps": a.steps} if a.steps else {}
    if a.stage == "vae":
        train_vae(a.work, photo_frac=a.photo_frac, **steps)
    elif a.stage == "vae-ft":
        train_vae(a.work, photo_frac=a.photo_frac, decoder_only=True, batch=16, crop=64, lr=3e-4,
                  **({"steps": a.steps} if a.steps else {"steps": 2000}))
    elif a.stage == "latents":
        encode_world(a.work, **({"n": a.n} if a.n else {}))
    elif a.stage == "unet":
        train_unet(a.work, **steps)
    else:
        print(export(a.work, out=a.out))
    print(json.dumps({"stage": a.stage, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
