"""Loss-guided sampling: steer the sampling loop with any differentiable loss on the picture.

At each step the clean latent x^_0 that the (guided) noise prediction points at is decoded by
the VAE, a loss is computed on those pixels ("more blue": ``blue_loss``), and the latents are
moved down its gradient before the scheduler steps (fastai's "Stable Diffusion Deep Dive", its
blue loss, which moves Euler/LMS latents by ``sigma**2 * grad``)::

    x^_0   = predict_x0(x_t, eps~)              # noise prediction detached: grad flows via x_t only
    loss   = loss_fn(vae.decode(x^_0) / 2 + 0.5) # one loss per picture, pixels in ~[0, 1]
    x_t   -= loss_scale * var_t * d loss / d x_t
    x_t-1  = scheduler.step(eps~, t, x_t)

``var_t`` is the variance of the noise in the latents: sigma_t^2 for sigma-space schedulers
(fastai's factor) and 1 - alpha-bar_t for DDPM-style ones (DDIM). With DDIM's latents
x_t = sqrt(ab) * x (x = x_0 + sigma eps the sigma-space latent) both make the same move of x,
so one ``loss_scale`` means the same in both; the move shrinks as the noise does.

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from .sampling import check_args, decode, denoise, encode_text, initial_latents, predict_x0

if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["blue_loss", "noise_variance", "loss_step", "loss_guided_sample"]

LossFn = Callable[[torch.Tensor], torch.Tensor]


def blue_loss(images: torch.Tensor, target: float = 0.9) -> torch.Tensor:
    """fastai's "more blue" loss, one value per picture: mean |blue channel - ``target``| of
    (B, 3, H, W) pictures with values in [0, 1].

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    return (images[:, 2] - target).abs().flatten(1).mean(1)


def noise_variance(scheduler: Any, t: torch.Tensor | float) -> float:
    """The variance of the noise in the scheduler's latents at ``t``: sigma_t^2 for sigma-space
    schedulers (x = x_0 + sigma eps), 1 - alpha-bar_t for DDPM-style ones.

    Read off ``predict_x0`` (so the same sigma lookup): for latents 0 and eps 1 it returns
    -sigma_t in both parametrisations. Call after ``scale_model_input`` for sigma-space schedulers.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    if scheduler.config.prediction_type != "epsilon":
        raise ValueError("loss guidance supports epsilon-prediction models only")
    zero = torch.zeros(1, dtype=torch.float64)
    sigma = -float(predict_x0(scheduler, zero, zero + 1, t).item())
    return sigma ** 2 if float(scheduler.init_noise_sigma) > 1 else sigma ** 2 / (sigma ** 2 + 1)


def loss_step(pipe: Pipeline, latents: torch.Tensor, noise_pred: torch.Tensor, t: torch.Tensor | float,
              loss_fn: LossFn, loss_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of loss guidance: (moved latents, the per-picture loss before the move).

    x^_0 from the detached noise prediction, decoded, ``loss_fn`` of the pictures (shape (B,)),
    summed so each picture gets its own gradient; latents -= loss_scale * var_t * gradient.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    with torch.enable_grad():
        x = latents.detach().requires_grad_(True)
        x0 = predict_x0(pipe.scheduler, x, noise_pred.detach(), t)
        images = pipe.vae.decode(x0 / pipe.vae.config.scaling_factor, return_dict=False)[0] / 2 + 0.5
        loss = loss_fn(images)
        if loss.shape != (len(latents),):
            raise ValueError(f"loss_fn must return one loss per picture, shape ({len(latents)},), "
                             f"got {tuple(loss.shape)}")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    var = noise_variance(pipe.scheduler, t)
    return (latents - loss_scale * var * grad).detach(), loss.detach()


def loss_guided_sample(pipe: Pipeline, prompt: str | Sequence[str], loss_fn: LossFn, loss_scale: float,
                       every: int = 1, negative_prompt: str | Sequence[str] | None = None,
                       height: int | None = None, width: int | None = None, num_inference_steps: int = 25,
                       guidance_scale: float = 7.5, generator: Any = None, latents: torch.Tensor | None = None,
                       output_type: str = "pil", losses: list | None = None) -> Any:
    """``sdlearn.sampling.sample`` with ``loss_step`` before the scheduler step of every
    ``every``-th step (0, every, 2 every, ...). ``loss_scale = 0`` gives ``sample``'s pictures
    bit for bit. ``losses``, if a list, receives each guided step's (B,) loss.

    Costs, per guided step, a VAE decode and its backward pass on top of the UNet call.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    batch, height, width = check_args(pipe, prompt, negative_prompt, height, width,
                                      num_inference_steps, guidance_scale, generator, output_type)
    if not callable(loss_fn):
        raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
    if not isinstance(loss_scale, numbers.Real) or not 0 <= loss_scale < float("inf"):
        raise ValueError(f"loss_scale must be a finite number >= 0, got {loss_scale!r}")
    if not isinstance(every, numbers.Integral) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if pipe.scheduler.config.prediction_type != "epsilon":
        raise ValueError("loss guidance supports epsilon-prediction models only")

    def guide(info: dict) -> torch.Tensor:
        if info["i"] % every:
            return info["latents"]
        moved, loss = loss_step(pipe, info["latents"], info["noise_pred"], info["t"], loss_fn, loss_scale)
        if losses is not None:
            losses.append(loss.cpu())
        return moved

    device = pipe._execution_device
    with torch.no_grad():
        embeds = encode_text(pipe, prompt, negative_prompt, guidance_scale, device)
        pipe.scheduler.set_timesteps(int(num_inference_steps), device=device)
        x = initial_latents(pipe, batch, height, width, embeds.dtype, generator, latents, device)
        x = denoise(pipe, x, embeds, guidance_scale, generator=generator, guide=guide)
        images = decode(pipe, x, output_type)
    pipe.maybe_free_model_hooks()
    return images
