"""Training code for sd-mini: the VAE, the latents cache, the mini CLIP text encoder, the UNet.

The recipe that made the shipped model is ``make sd-mini`` (see sdlearn/data/sd-mini/README.md);
every stage checkpoints to ``--work`` and resumes from there, so an interrupted run loses little.
Each trainer writes only its step (a batch and its loss); the loop is ``sdlearn.training.fit``.

    python -m sdlearn.mini.recipe vae     --steps 6000   # AutoencoderKL on world images + photo crops
    python -m sdlearn.mini.recipe latents --n 40000 --size 128   # encode the training world once
    python -m sdlearn.mini.recipe clip    --steps 1200 --out X   # a mini CLIP: the text encoder, contrastively
    python -m sdlearn.mini.recipe unet    --text-init X --freeze-text --noise-offset 0.1   # the UNet, CFG dropout
    python -m sdlearn.mini.recipe export                 # diffusers folder -> sdlearn/data/sd-mini

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..latents import psnr
from ..training import copy_ema, diffusion_loss, fit, noise_scheduler, plot_losses, save
from . import world
from .configs import mini_components

TRAIN_SEED, HELDOUT_SEED = 1, 999  # world seeds: training data vs evaluation prompts
DEFAULT_WORK = Path("data/train-work")


# ----------------------------------------------------------------------------- data
def _photo_pool(size: int = 256) -> list[np.ndarray]:
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


def world_pictures(work: Path, n: int, size: int = 64) -> np.ndarray:
    """The first ``n`` training-world pictures at ``size`` px, rendered once on both cores and
    cached in ``work`` (memory-mapped on later calls).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    path = work / (f"world_{TRAIN_SEED}_{n}" + ("" if size == 64 else f"_{size}px") + ".npy")
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".tmp.npy"), world.pictures(TRAIN_SEED, n, size=size))
        path.with_suffix(".tmp.npy").replace(path)
    return np.load(path, mmap_mode="r")


def vae_batch(rng: np.random.Generator, step: int, batch: int, crop: int, photos: list[np.ndarray],
              photo_frac: float, pictures: np.ndarray | None = None) -> torch.Tensor:
    """A (B, 3, crop, crop) batch in [-1, 1]: random crops of world images and of photos.
    World image ``step * batch + k`` comes from ``pictures`` (cycled) if given, else is rendered.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    imgs = []
    for k in range(batch):
        if photos and rng.random() < photo_frac:
            p = photos[rng.integers(len(photos))]
            y, x = rng.integers(p.shape[0] - crop + 1), rng.integers(p.shape[1] - crop + 1)
            imgs.append(p[y : y + crop, x : x + crop])
        else:
            i = step * batch + k
            im = pictures[i % len(pictures)] if pictures is not None else world.sample(TRAIN_SEED, i).image
            y, x = rng.integers(im.shape[0] - crop + 1), rng.integers(im.shape[1] - crop + 1)
            imgs.append(im[y : y + crop, x : x + crop])
    arr = np.stack(imgs).astype(np.float32) / 127.5 - 1.0
    if rng.random() < 0.5:  # horizontal flip: free augmentation for the photos and shapes alike
        arr = arr[:, :, ::-1]
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------- VAE
def train_vae(work: Path = DEFAULT_WORK, steps: int = 5000, batch: int = 32, crop: int = 32,
              lr: float = 1e-3, kl_weight: float = 1e-6, photo_frac: float = 0.1,
              ckpt_every: int = 250, seed: int = 0, decoder_only: bool = False,
              progress: bool = True, pool: int = 0, init: Path | None = None,
              stop_at: int | None = None, latent_blur: float = 0.0, size: int = 64) -> Path:
    """Train the AutoencoderKL with L1 + MSE reconstruction and a tiny KL term (as SD's VAE).

    The VAE is fully convolutional (plus attention at the bottleneck), so training on 32x32
    crops teaches the same ×8 code as full images, four times cheaper per sample.

    ``decoder_only=True`` is the second stage (``vae-ft``): starting from ``vae.pt``, the encoder
    is frozen — so the latent space, and any latents already cached for the UNet, stay valid —
    and only the decoder is fine-tuned, on full 64x64 pictures. Stability AI sharpened SD's
    decoder the same way (the "ft-MSE" VAE). ``pool`` > 0 cycles through that many world
    pictures rendered once (``world_pictures``) instead of rendering each batch's in the loop.
    ``init``: a diffusers VAE folder to start from instead of random weights (sd-mini v2's VAE
    is v1's, fine-tuned on world v2: it already knows shapes, colours and photos).
    ``latent_blur`` a > 0: the decoder reads each sampled latent with a 3x3 box blur mixed in at
    a random share in [0, a], so the encoder must put what tells shapes apart where a smoothed
    latent keeps it (``benchmarks/denoising.py``'s ``latent_blur`` reading measures that). With
    ``decoder_only`` the blurred latent is the frozen encoder's mean: the decoder alone learns to
    read smoothed codes, and cached latents stay valid.
    ``size``: the pool's picture size in px.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    torch.manual_seed(seed)
    vae = mini_components()["vae"]
    ck = work / ("vae_ft.pt" if decoder_only else "vae.pt")
    if init is not None and not decoder_only:
        from diffusers import AutoencoderKL

        vae.load_state_dict(AutoencoderKL.from_pretrained(init).state_dict())
    if decoder_only:
        vae.load_state_dict(torch.load(work / "vae.pt", weights_only=False)["model"])
        vae.encoder.requires_grad_(False), vae.quant_conv.requires_grad_(False)
    photos = _photo_pool() if photo_frac > 0 else []
    pictures = world_pictures(work, pool, size) if pool else None

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        rng = np.random.default_rng([seed, step, int(decoder_only)])
        x = vae_batch(rng, step, batch, crop, photos, photo_frac, pictures)
        if decoder_only:
            with torch.no_grad():
                z = vae.encode(x).latent_dist.mean  # what the UNet learns to produce
            kl = torch.zeros(())
        else:
            post = vae.encode(x).latent_dist
            z, kl = post.sample(), post.kl().mean()  # (B, 4, crop/8, crop/8)
        if latent_blur:
            a = latent_blur * torch.rand((len(z), 1, 1, 1), generator=torch.Generator().manual_seed(step))
            z = (1 - a) * z + a * F.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)
        rec = vae.decode(z).sample
        loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + kl_weight * kl
        return loss, {"psnr": psnr(rec.detach(), x)}

    log = fit(step_fn, [p for p in vae.parameters() if p.requires_grad], steps, lr=lr,
              modules={"model": vae}, ckpt=ck, ckpt_every=ckpt_every, progress=progress, desc=ck.stem,
              stop_at=stop_at)["log"]
    plot_losses(log, "loss", work / f"{ck.stem}_loss.png",
                f"VAE{' decoder fine-tune' if decoder_only else ''}: L1 + MSE + KL")
    return ck


# ----------------------------------------------------------------------------- latents
def load_vae(work: Path = DEFAULT_WORK, prefer_finetuned: bool = True, size: int = 64):
    """The trained VAE; its decoder fine-tuned (``vae_ft.pt``) if that stage has run. ``size``
    only sets the picture size its config names (the weights serve every size).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    vae = mini_components(size=size)["vae"]
    ft = work / "vae_ft.pt"
    path = ft if prefer_finetuned and ft.exists() else work / "vae.pt"
    vae.load_state_dict(torch.load(path, weights_only=False)["model"])
    return vae.eval().requires_grad_(False)


def _save_vae_stage(work: Path, out: Path) -> Path:
    """Stage 1's result as a diffusers VAE folder (weights only, safetensors; the fine-tuned
    decoder if ``vae-ft`` has run) plus its loss curves: the small output a later session needs,
    committed where checkpoints never are."""
    import shutil

    load_vae(work).save_pretrained(out, safe_serialization=True)
    for png in ("vae_loss.png", "vae_ft_loss.png"):
        if (work / png).exists():
            shutil.copy(work / png, out / png)
    return out


def _load_vae_stage(folder: Path, work: Path) -> Path:
    """Start a work folder from a saved stage 1: ``vae.pt`` with the weights (no optimizer state),
    which is all the later stages (``vae-ft``, ``latents``, ``export``) read."""
    from diffusers import AutoencoderKL

    save(work / "vae.pt", model=AutoencoderKL.from_pretrained(folder).state_dict(), step=None, log=[])
    return work / "vae.pt"


@torch.no_grad()
def encode_world(work: Path = DEFAULT_WORK, n: int = 50000, batch: int = 250, progress: bool = True,
                 size: int = 64) -> Path:
    """Encode ``n`` training-world images of ``size`` px once (latent means) and tokenize their
    captions; ``size`` is the model's native size (the UNet then trains on size/8 latents).

    Also measures the latents' standard deviation: ``scaling_factor = 1 / std`` makes the
    UNet's inputs unit-variance, which is exactly how SD's 0.18215 was chosen.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    vae = load_vae(work, prefer_finetuned=False)  # the encoder is the same in both stages
    tok = mini_components()["tokenizer"]
    lat, ids = [], []
    pictures = world_pictures(work, n, size)  # world.sample(TRAIN_SEED, i, size).image, on every core
    for start in tqdm(range(0, n, batch), desc="encode", mininterval=5, disable=not progress):
        stop = min(n, start + batch)
        # A caption needs only the scene, not its pixels: random_scene with the sample's own rng.
        caps = [world.random_scene(np.random.default_rng([TRAIN_SEED, i])).caption for i in range(start, stop)]
        x = torch.from_numpy(np.array(pictures[start:stop])).permute(0, 3, 1, 2).float() / 127.5 - 1
        lat.append(vae.encode(x).latent_dist.mean)
        ids.append(tok(caps, padding="max_length", max_length=77, truncation=True,
                       return_tensors="pt").input_ids.to(torch.int32))
    latents, input_ids = torch.cat(lat), torch.cat(ids)
    std = latents.std().item()
    out = work / "latents.pt"
    save(out, latents=latents, input_ids=input_ids, std=std, mean=latents.mean().item(), size=size,
         uncond_ids=tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids)
    print(f"latents {tuple(latents.shape)} std={std:.4f} -> scaling_factor={1 / std:.5f}")
    return out


# ----------------------------------------------------------------------------- UNet + text
def load_latents(work: Path = DEFAULT_WORK, std: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cached training set: latents scaled to unit variance (as the pipeline expects), the
    caption ids and the ids of the empty caption "". ``std``: divide by this instead of the
    cache's own std — a shipped model's ``1 / scaling_factor``, so a fine-tune on a subset sees
    its latents exactly as that model's pipeline scales them.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    data = torch.load(work / "latents.pt", weights_only=False)
    return data["latents"] / (std or data["std"]), data["input_ids"].long(), data["uncond_ids"].long()


def native_size(work: Path = DEFAULT_WORK) -> int:
    """The picture size (px) the cached latents were encoded at: the model's native size, which
    every later stage (UNet, export, the variants) reads from here.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    return int(torch.load(work / "latents.pt", weights_only=False, mmap=True).get("size", 64))


def _object_masks(work: Path, n: int, latent: int) -> torch.Tensor:
    """(n, 1, latent, latent) masks of the captioned objects of training pictures ``0..n-1``, at
    latent resolution and one latent place wider than the object (its edge lies in that ring);
    drawn from the scenes alone (no rendering), cached in ``work``."""
    from PIL import Image, ImageDraw

    path = work / f"masks_{TRAIN_SEED}_{n}_{latent}.pt"
    if path.exists():
        return torch.load(path)
    fine = latent * 4
    out = np.zeros((n, fine, fine), np.uint8)
    for i in tqdm(range(n), desc="masks", mininterval=5):
        img = Image.new("L", (fine, fine), 0)
        for o in world.random_scene(np.random.default_rng([TRAIN_SEED, i])).objects:
            ImageDraw.Draw(img).polygon(world.outline(o.shape, o.x * fine, o.y * fine, o.r * fine, o.angle), fill=1)
        out[i] = np.asarray(img)
    m = F.max_pool2d(torch.from_numpy(out).float()[:, None], 4)  # any coverage of a latent place
    m = F.max_pool2d(m, 3, stride=1, padding=1).to(torch.uint8)  # and the ring around it
    work.mkdir(parents=True, exist_ok=True)
    torch.save(m, path)
    return m


def _check_caption_noise(caption_noise: float) -> None:
    """Refuse a caption-swap share outside [0, 1), before a training run (the base UNet's or a
    variant's) loads anything."""
    if not 0 <= caption_noise < 1:
        raise ValueError(f"caption_noise must be in [0, 1), got {caption_noise!r}")


def caption_batch(latents: torch.Tensor, input_ids: torch.Tensor, uncond: torch.Tensor, batch: int,
                  cond_drop: float, gen: torch.Generator,
                  caption_noise: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random batch ``(indices, latents, caption ids)``, each caption replaced by "" with
    probability ``cond_drop`` (classifier-free guidance needs the unconditional prediction), and
    each remaining one, with probability ``caption_noise``, by the caption of another random
    picture: a caption that does not describe its picture, as web captions often do not (with 0
    no extra random numbers are drawn, so earlier runs replay exactly).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    idx = torch.randint(0, latents.shape[0], (batch,), generator=gen)
    ids = input_ids[idx].clone()
    drop = torch.rand(batch, generator=gen) < cond_drop
    ids[drop] = uncond
    if caption_noise > 0:
        swap = (torch.rand(batch, generator=gen) < caption_noise) & ~drop
        other = input_ids[torch.randint(0, latents.shape[0], (batch,), generator=gen)]
        ids[swap] = other[swap]
    return idx, latents[idx], ids


def train_unet(work: Path = DEFAULT_WORK, steps: int = 10000, batch: int = 64, lr: float = 2e-3,
               cond_drop: float = 0.1, ema_decay: float = 0.999, ckpt_every: int = 250,
               seed: int = 0, progress: bool = True, snr_gamma: float | None = None,
               stop_at: int | None = None, init: Path | None = None, text_init: Path | None = None,
               train_text: bool = True, noise_offset: float = 0.0, object_weight: float = 0.0,
               caption_noise: float = 0.0) -> Path:
    """Train the UNet, and with it the text encoder unless that is frozen, on cached latents, with
    caption dropout. The shipped run (``make sd-mini``): these defaults, ``text_init`` the mini
    CLIP (``recipe clip``), ``train_text=False``, ``noise_offset=0.1``.

    ``cond_drop`` (10 %) replaces the caption by "" so the same network also learns the
    unconditional prediction that classifier-free guidance extrapolates away from.
    ``snr_gamma=None`` (default) is SD's plain noise MSE: every timestep counts alike, so the
    low-noise steps — where guidance pulls hardest — are learnt as well as the rest (v1 used
    Min-SNR-5, which down-weights them; see sdlearn/data/sd-mini/README.md).
    ``init``: a pipeline folder whose ``unet`` and ``text_encoder`` to start from (a committed
    stage, so a later session goes on with a fresh optimizer); ``stop_at`` cuts the schedule short.
    ``text_init``: a pipeline folder whose ``text_encoder`` alone to start from, and
    ``train_text=False`` freezes it — SD 1.5's own recipe, which trains its UNet under a frozen,
    pretrained CLIP text encoder. ``noise_offset``: see ``training.diffusion_loss`` (at 128 px
    without it the caption never sets the background). ``object_weight`` λ > 0 weights the
    squared error by 1 + λ on the latent places of the captioned objects (``_object_masks``).
    ``caption_noise`` q: a share of the captions swapped for another picture's (``caption_batch``).
    The conditional prediction then learns a mixture, partly the unconditional one, so the caption
    holds the latents less tightly and guidance has to supply the rest, as on SD's web captions;
    it makes the guided ODE less stiff (PNDM, notebook 05 section 8; stage README, session 22).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    _check_caption_noise(caption_noise)
    latents, input_ids, uncond = load_latents(work)
    torch.manual_seed(seed)
    comps = mini_components(seed, size=latents.shape[-1] * 8)
    unet, te = comps["unet"], comps["text_encoder"]
    if init is not None:
        u, t = load_unet_and_text(init=init)  # into this size's config: sample_size follows the latents
        unet.load_state_dict(u.state_dict()), te.load_state_dict(t.state_dict())
    if text_init is not None:
        from transformers import CLIPTextModel

        te.load_state_dict(CLIPTextModel.from_pretrained(text_init, subfolder="text_encoder").state_dict())
    te.requires_grad_(train_text)
    sched, ck = noise_scheduler(), work / "unet.pt"
    masks = _object_masks(work, latents.shape[0], latents.shape[-1]) if object_weight else None

    def step_fn(step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx, x0, ids = caption_batch(latents, input_ids, uncond, batch, cond_drop, gen, caption_noise)
        weight = None if masks is None else 1 + object_weight * masks[idx].float()
        return diffusion_loss(unet, te, x0, ids, sched, gen, snr_gamma=snr_gamma, noise_offset=noise_offset,
                              weight=weight)

    trained = list(unet.parameters()) + (list(te.parameters()) if train_text else [])
    log = fit(step_fn, trained, steps, lr=lr, ema_decay=ema_decay,
              modules={"unet": unet, "text_encoder": te}, ckpt=ck, ckpt_every=ckpt_every,
              progress=progress, desc="unet", stop_at=stop_at)["log"]
    plot_losses(log, "loss", work / "unet_loss.png",
                "UNet: noise MSE" + (f" (min-SNR-{snr_gamma:g})" if snr_gamma else ""))
    return ck


def load_unet_and_text(work: Path = DEFAULT_WORK, use_ema: bool = True, init: Path | None = None):
    """The trained UNet and text encoder from ``unet.pt``; with their EMA weights (the shipped
    ones) unless ``use_ema=False``. ``init``: read them from a pipeline folder instead (a
    committed stage or the shipped ``sdlearn/data/sd-mini``), whose weights are already the EMA.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    if init is not None:
        from diffusers import UNet2DConditionModel
        from transformers import CLIPTextModel

        unet = UNet2DConditionModel.from_pretrained(init, subfolder="unet").float()
        return unet, CLIPTextModel.from_pretrained(init, subfolder="text_encoder").float()
    comps = mini_components(size=native_size(work))
    unet, te = comps["unet"], comps["text_encoder"]
    st = torch.load(work / "unet.pt", weights_only=False)
    unet.load_state_dict(st["unet"]), te.load_state_dict(st["text_encoder"])
    if use_ema:  # the EMA covers what trained: the UNet, and the text encoder unless it was frozen
        params = list(unet.parameters()) + list(te.parameters())
        copy_ema(params if len(st["ema"]) == len(params) else list(unet.parameters()), st["ema"])
    return unet, te


# ----------------------------------------------------------------------------- export
def export(work: Path = DEFAULT_WORK, out: Path | None = None, use_ema: bool = True) -> Path:
    """Write the diffusers folder (safetensors; UNet and VAE in fp16) that ``load_pipeline("mini")``
    loads.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    import shutil

    from diffusers import StableDiffusionPipeline

    out = Path(out) if out else Path(__file__).parent.parent / "data" / "sd-mini"
    size = native_size(work)
    comps = mini_components(size=size)
    comps["vae"] = load_vae(work, size=size)
    data = torch.load(work / "latents.pt", weights_only=False)
    # Round the measured factor like SD's 0.18215; written into the VAE config the pipeline reads.
    comps["vae"].register_to_config(scaling_factor=round(1.0 / data["std"], 5))
    comps["unet"], comps["text_encoder"] = load_unet_and_text(work, use_ema)
    pipe = StableDiffusionPipeline(**comps, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    # The UNet and the VAE are stored in fp16 (diffusers loads them back as fp32): half the bytes,
    # so the model and its two variants fit the 40 MB budget. The text encoder stays fp32, because
    # transformers loads a checkpoint in its stored dtype.
    pipe.unet.half(), pipe.vae.half()
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
    """``python -m sdlearn.mini.recipe STAGE``, what ``make sd-mini`` runs; ``main(["export"])``
    is the same call from Python.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    p = argparse.ArgumentParser(prog="python -m sdlearn.mini.recipe", description=__doc__.split("\n")[0])
    p.add_argument("stage", choices=["vae", "vae-save", "vae-load", "vae-ft", "latents", "clip", "unet", "export"])
    p.add_argument("--work", type=Path, default=DEFAULT_WORK)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--n", type=int, default=None, help="latents: how many world images to encode")
    p.add_argument("--size", type=int, default=64, help="latents: the model's native picture size in px; vae, vae-ft: the pool's")
    p.add_argument("--out", type=Path, default=None,
                   help="export: folder (default: the package's sd-mini); clip: folder for text_encoder/ (default: WORK/clip)")
    p.add_argument("--photo-frac", type=float, default=0.1, help="vae: share of photo crops in a batch")
    p.add_argument("--pool", type=int, default=50000, help="vae, vae-ft: world pictures rendered once and cycled")
    p.add_argument("--init", type=Path, default=None, help="vae: a diffusers VAE folder to start from; unet: a pipeline folder")
    p.add_argument("--lr", type=float, default=None, help="vae, unet: peak learning rate (default 1e-3, 2e-3)")
    p.add_argument("--text-init", type=Path, default=None, help="unet: a pipeline folder whose text encoder to start from")
    p.add_argument("--freeze-text", action="store_true", help="unet: keep the text encoder fixed (SD 1.5's recipe)")
    p.add_argument("--noise-offset", type=float, default=0.0, help="unet: offset noise (diffusers' --noise_offset)")
    p.add_argument("--object-weight", type=float, default=0.0, help="unet: extra loss weight on the objects' latent places")
    p.add_argument("--caption-noise", type=float, default=0.0, help="unet: share of captions swapped for another picture's")
    p.add_argument("--snr-gamma", type=float, default=None, help="unet: Min-SNR-γ loss weight (default: plain MSE)")
    p.add_argument("--seed", type=int, default=0,
                   help="unet: the batches', noises' and timesteps' seed (a leg from --init with a new seed "
                        "does not replay the earlier legs' draws)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--stop-at", type=int, default=None, help="vae, unet: stop after this many steps of the schedule")
    p.add_argument("--batch", type=int, default=None, help="vae, vae-ft: pictures per step (default 32, 16)")
    p.add_argument("--crop", type=int, default=None, help="vae, vae-ft: crop size in px (default 32, 64)")
    p.add_argument("--latent-blur", type=float, default=0.0, help="vae, vae-ft: largest share of a 3x3 blur mixed into the latents")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    t0 = time.time()
    steps = {"steps": a.steps} if a.steps else {}
    vae_kw = dict(photo_frac=a.photo_frac, pool=a.pool, size=a.size, latent_blur=a.latent_blur)
    if a.stage == "vae":
        train_vae(a.work, init=a.init, stop_at=a.stop_at, batch=a.batch or 32, crop=a.crop or 32, **vae_kw,
                  **steps, **({"lr": a.lr} if a.lr else {}))
    elif a.stage == "vae-save":  # stage 1's weights -> --out (a diffusers folder, for committing)
        print(_save_vae_stage(a.work, a.out))
    elif a.stage == "vae-load":  # a saved stage 1 (--init) -> the work folder, to go on from there
        print(_load_vae_stage(a.init, a.work))
    elif a.stage == "vae-ft":
        train_vae(a.work, decoder_only=True, batch=a.batch or 16, crop=a.crop or 64, lr=a.lr or 3e-4, **vae_kw,
                  **({"steps": a.steps} if a.steps else {"steps": 2000}))
    elif a.stage == "latents":
        encode_world(a.work, size=a.size, **({"n": a.n} if a.n else {}))
    elif a.stage == "clip":  # the text encoder, pretrained contrastively (see sdlearn.mini.clip)
        from .clip import train_clip

        print(train_clip(a.work, out=a.out, **steps))
    elif a.stage == "unet":
        train_unet(a.work, stop_at=a.stop_at, init=a.init, snr_gamma=a.snr_gamma, text_init=a.text_init,
                   train_text=not a.freeze_text, noise_offset=a.noise_offset,
                   object_weight=a.object_weight, caption_noise=a.caption_noise, seed=a.seed, **steps,
                   **({"lr": a.lr} if a.lr else {}))
    else:
        print(export(a.work, out=a.out))
    print(json.dumps({"stage": a.stage, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
