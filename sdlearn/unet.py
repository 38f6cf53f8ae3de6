"""The UNet: given a noisy latent, the timestep and the prompt, predict the noise.

Training noises a clean latent ``x0`` to ``x_t = sqrt(abar_t) * x0 + sqrt(1 - abar_t) * eps``
(``abar_t`` = ``scheduler.alphas_cumprod[t]``) and teaches the UNet to output ``eps``. Knowing
``eps`` is the same as knowing ``x0``: the formula can be solved for it (``pred_x0``), which is
how every sampler turns a noise prediction into a step.

Introduced in notebooks/03_unet_noise_prediction.ipynb.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["SD15_UNET_CONFIG", "SD15_UNET_PARAMS", "count_params", "sd15_unet_skeleton", "predict_noise",
           "pred_x0", "noise_errors"]

# SD 1.5's unet/config.json (the entries that differ from UNet2DConditionModel's defaults, plus
# the sizes worth seeing). Enough to rebuild the architecture without downloading 3.4 GB.
SD15_UNET_CONFIG: dict[str, Any] = dict(
    sample_size=64,  # latent side: 64 * 8 = 512 px pictures
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,  # CLIP ViT-L/14's text width
    attention_head_dim=8,  # in diffusers' historical naming this is the number of heads
    norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
SD15_UNET_PARAMS = 859_520_964  # count_params(sd15_unet_skeleton())


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (weights and biases) of a module; works on the meta device too.

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    return sum(p.numel() for p in module.parameters())


def sd15_unet_skeleton(**overrides: Any) -> torch.nn.Module:
    """SD 1.5's UNet architecture on PyTorch's ``meta`` device: every shape, no memory, no download.

    Tensors on ``meta`` have a shape and dtype but no storage, so building an 860 M-parameter
    model costs milliseconds and no RAM. Good for counting and inspecting, not for running.

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**{**SD15_UNET_CONFIG, **overrides})


@torch.no_grad()
def predict_noise(unet: Any, x_t: torch.Tensor, t: int | torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
    """The UNet's noise prediction ``eps_hat`` for noisy latents at timestep ``t``.

    ``text_embeds`` is (B, 77, hidden) (or (1, 77, hidden), repeated over the batch); the UNet
    reads it through cross-attention. Inputs are moved to the UNet's device and dtype.

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    x_t = x_t.to(device=unet.device, dtype=unet.dtype)
    emb = text_embeds.to(device=unet.device, dtype=unet.dtype)
    if emb.shape[0] == 1 and x_t.shape[0] > 1:
        emb = emb.expand(x_t.shape[0], -1, -1)
    return unet(x_t, t, encoder_hidden_states=emb).sample


def _abar(scheduler: Any, t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod[t]`` shaped to broadcast over (B, C, H, W) ``like``."""
    t = torch.as_tensor(t, device=scheduler.alphas_cumprod.device).long()
    abar = scheduler.alphas_cumprod[t].to(device=like.device, dtype=like.dtype)
    return abar.reshape(-1, *([1] * (like.ndim - 1))) if abar.ndim else abar


def pred_x0(scheduler: Any, x_t: torch.Tensor, eps: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
    """The clean latent implied by a noise prediction: ``(x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)``.

    This is the forward noising formula solved for ``x0``; diffusers' DDIM and DDPM ``step``
    compute the same thing and return it as ``pred_original_sample``. ``t`` is an int or a
    (B,) tensor of timesteps. At large ``t``, ``sqrt(abar_t)`` is tiny, so small errors in
    ``eps`` are blown up: early estimates are blurry guesses.

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    abar = _abar(scheduler, t, x_t)
    return (x_t - (1 - abar) ** 0.5 * eps) / abar ** 0.5


def noise_errors(unet: Any, scheduler: Any, x0: torch.Tensor, text_embeds: torch.Tensor,
                 timesteps: Sequence[int], generator: torch.Generator | None = None) -> list[float]:
    """Mean squared error between the true and the predicted noise, one value per timestep.

    One noise tensor is drawn (on the CPU, from ``generator``) and reused at every timestep, so
    the curve shows the effect of ``t`` alone. Predicting zero noise scores about 1.0 (the
    noise has unit variance), so anything below 1 is the UNet knowing something.

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(x0.device, x0.dtype)
    out = []
    for t in timesteps:
        x_t = scheduler.add_noise(x0, noise, torch.tensor([int(t)]))
        eps_hat = predict_noise(unet, x_t, int(t), text_embeds)
        out.append((eps_hat.float() - noise.to(eps_hat.device).float()).pow(2).mean().item())
    return out
