"""The VAE: pictures in, latents out, and back.

Stable Diffusion never denoises pixels. Its VAE (``AutoencoderKL``) squeezes a picture into a
small *latent* — for SD 1.5, a 512x512x3 picture becomes 4x64x64, 48 times fewer numbers — and
the UNet works there. Two conventions matter and are easy to get wrong:

* the latent is **scaled** by ``vae.config.scaling_factor`` (0.18215 for SD 1.5) so that it has
  roughly unit variance, like the noise the sampler starts from; decoding divides it back out;
* pictures enter the VAE as (B, 3, H, W) tensors in [-1, 1]; ``VaeImageProcessor`` (the
  pipeline's ``image_processor``) converts PIL pictures to and from that form.

Introduced in notebooks/01_vae_latents.ipynb.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = ["vae_factor", "latent_shape", "to_vae_input", "encode", "decode", "psnr", "count_vae_calls"]


def vae_factor(vae: Any) -> int:
    """How many pixels one latent cell covers along each side: ``2 ** (number of downsamplings)``.

    The encoder has one block per entry of ``block_out_channels`` and every block but the last
    halves the resolution, so SD 1.5's four blocks give 2**3 = 8. Diffusers computes its
    ``pipe.vae_scale_factor`` the same way.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    return 2 ** (len(vae.config.block_out_channels) - 1)


def latent_shape(vae: Any, height: int, width: int) -> tuple[int, int, int]:
    """(channels, h, w) of the latent of a ``height`` x ``width`` picture, read from the config.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    f = vae_factor(vae)
    if height % f or width % f:
        raise ValueError(f"height and width must be multiples of {f}, got {height}x{width}")
    return vae.config.latent_channels, height // f, width // f


def to_vae_input(vae: Any, image: Any) -> torch.Tensor:
    """A (B, 3, H, W) tensor in [-1, 1] on the VAE's device and dtype.

    PIL pictures (or a list of them) go through diffusers' ``VaeImageProcessor`` — the same
    conversion the img2img and inpainting pipelines apply — and tensors are assumed to be in
    [-1, 1] already.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    if isinstance(image, (Image.Image, np.ndarray)) or (
            isinstance(image, Sequence) and image and isinstance(image[0], Image.Image)):
        from diffusers.image_processor import VaeImageProcessor

        image = VaeImageProcessor(vae_scale_factor=vae_factor(vae)).preprocess(image)
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[1] != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"expected a PIL picture or a (B, 3, H, W) tensor in [-1, 1], got {shape}")
    return image.to(device=vae.device, dtype=vae.dtype)


@torch.no_grad()
def encode(vae: Any, image: Any, sample: bool = False,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Picture(s) -> **scaled** latents, ``(B, latent_channels, H / f, W / f)``.

    The encoder outputs a Gaussian per latent value (a mean and a log-variance). We take its
    mean by default, so the same picture always gives the same latent; ``sample=True`` draws
    from the Gaussian instead, as diffusers' img2img does. The result is multiplied by
    ``vae.config.scaling_factor`` because that is the space the UNet was trained in.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    x = to_vae_input(vae, image)
    dist = vae.encode(x).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mean
    return z * vae.config.scaling_factor


@torch.no_grad()
def decode(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents -> pictures as a (B, 3, H, W) tensor, roughly in [-1, 1] (not clipped).

    Undo the scaling first (``latents / scaling_factor``): the decoder was trained on the raw
    latents. Turn the result into PIL pictures with ``pipe.image_processor.postprocess``.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    z = latents.to(device=vae.device, dtype=vae.dtype)
    return vae.decode(z / vae.config.scaling_factor).sample


def psnr(a: Any, b: Any, data_range: float = 2.0) -> float:
    """Peak signal-to-noise ratio in dB: ``10 * log10(data_range**2 / MSE)``.

    ``a`` and ``b`` are tensors or arrays of the same shape. The default ``data_range=2.0``
    fits the VAE's [-1, 1] pictures and gives the same number as comparing them in [0, 1]
    (pass 1.0 for [0, 1] data, 255 for uint8). Values are clipped to the range first, as a
    picture viewer would. Higher is better; identical inputs give ``inf``.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    # float64 on the CPU: the MSE of two near-identical pictures is tiny and fp16 would round it.
    a, b = (x.detach().double().cpu() if isinstance(x, torch.Tensor)
            else torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in (a, b))
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    lo, hi = (-1.0, 1.0) if data_range == 2.0 else (0.0, data_range)
    mse = (a.clamp(lo, hi) - b.clamp(lo, hi)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(data_range ** 2 / mse)


@contextmanager
def count_vae_calls(vae: Any) -> Iterator[dict[str, int]]:
    """Count how often the VAE's encoder and decoder run inside a ``with`` block.

    Forward hooks on ``vae.encoder`` and ``vae.decoder`` see every call, however the pipeline
    reaches them, so this answers "does text-to-image use the encoder?" by measurement::

        with count_vae_calls(pipe.vae) as calls:
            pipe("a cat")
        calls  # {'encoder': 0, 'decoder': 1}

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    calls = {"encoder": 0, "decoder": 0}

    def hook(name: str):
        def fn(module: torch.nn.Module, args: Any, output: Any) -> None:
            calls[name] += 1
        return fn

    handles = [vae.encoder.register_forward_hook(hook("encoder")),
               vae.decoder.register_forward_hook(hook("decoder"))]
    try:
        yield calls
    finally:  # always remove the hooks, or later calls would keep counting
        for h in handles:
            h.remove()
