"""Deliberately degraded world pictures: what a poor generator does to a shape.

Scorer v2 must read a clean render right and answer "none" for each of these, so they are how
its thresholds are checked (``tests/test_scoring.py``, ``benchmarks/scorer.py``). Each takes a
(64, 64, 3) uint8 render of ``world.sample(seed, i)`` and returns a degraded copy:

- ``blur``: a Gaussian blur of 1.5 px, a smeared shape;
- ``warp``: a sinusoidal displacement of 1-2 px every 8-12 px, a lumpy outline;
- ``blob``: each object redrawn as a random polygon of its colour, place and size;
- ``two_colours``: half of each object painted another colour.

``round_trip`` passes pictures through a VAE (encode to the latent mean, decode), which is what
every picture a diffusion model makes goes through last: a scorer for generated pictures must
read round trips of clean renders, and still reject round trips of degraded ones.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from scipy import ndimage

from . import world
from .world import PALETTE, Scene


def blur(img: np.ndarray, seed: int, i: int) -> np.ndarray:
    """A Gaussian blur of 1.5 px: the shape is smeared.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    return np.clip(ndimage.gaussian_filter(img.astype(np.float32), (1.5, 1.5, 0)), 0, 255).astype(np.uint8)


def warp(img: np.ndarray, seed: int, i: int) -> np.ndarray:
    """A lumpy outline: a sinusoidal displacement of 1-2 px with an 8-12 px period.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    rng = np.random.default_rng([seed, i])
    yy, xx = np.mgrid[0:64, 0:64].astype(np.float32)
    a, f, ph = rng.uniform(1.0, 2.0), rng.uniform(0.5, 0.8), rng.uniform(0, 6.28, 2)
    coords = [yy + a * np.sin(xx * f + ph[1]), xx + a * np.sin(yy * f + ph[0])]
    return np.stack([ndimage.map_coordinates(img[..., c].astype(np.float32), coords, order=1, mode="nearest")
                     for c in range(3)], -1).astype(np.uint8)


def blob(img: np.ndarray, seed: int, i: int) -> np.ndarray:
    """Each object of ``world.sample(seed, i)`` replaced by a random polygon blob of its colour,
    place and size, on a background of the same colour and style (drawn anew, so a pattern's
    stripes or checks may lie differently).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    s, rng = world.sample(seed, i), np.random.default_rng([seed, i, 1])
    bg = world.render(Scene([], s.scene.background, s.scene.style), rng=np.random.default_rng([seed, i])).image
    big = Image.fromarray(bg).resize((256, 256))
    for o in s.scene.objects:
        k = rng.integers(5, 9)
        ang, rad = np.sort(rng.uniform(0, 2 * np.pi, k)), o.r * 256 * rng.uniform(0.6, 1.3, k)
        ImageDraw.Draw(big).polygon([(o.x * 256 + r * np.cos(a), o.y * 256 + r * np.sin(a)) for a, r in zip(ang, rad)],
                                    fill=PALETTE[o.colour])
    return np.asarray(big.resize((64, 64), Image.BOX))


def two_colours(img: np.ndarray, seed: int, i: int) -> np.ndarray:
    """The left half of each object of ``world.sample(seed, i)`` painted in another colour.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    s, out = world.sample(seed, i), img.copy()
    yy, xx = np.mgrid[0:64, 0:64]
    for o in s.scene.objects:
        other = [c for c in world.COLOURS if c not in (o.colour, s.scene.background)][i % 7]
        out[(s.mask > 0) & (xx < o.x * 64) & (np.hypot(xx - o.x * 64, yy - o.y * 64) < o.r * 83)] = PALETTE[other]
    return out


DEGRADATIONS: dict[str, Callable[[np.ndarray, int, int], np.ndarray]] = {
    "blur": blur, "warp": warp, "blob": blob, "two_colours": two_colours}


@torch.no_grad()
def round_trip(vae: Any, images: list[np.ndarray], batch: int = 64) -> list[np.ndarray]:
    """``images`` (uint8, H x W x 3) encoded to the VAE's latent mean and decoded back to uint8.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    out = []
    for k in range(0, len(images), batch):
        x = torch.from_numpy(np.stack(images[k:k + batch])).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = vae.decode(vae.encode(x).latent_dist.mean).sample  # (B, 3, H, W) in about [-1, 1]
        out += list(((rec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return out
