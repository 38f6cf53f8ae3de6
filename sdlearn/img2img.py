"""Image-to-image: start the sampling loop part-way, from a noised copy of a picture.

Text-to-image starts from pure noise x_T. Img2img (SDEdit, Meng et al. 2021) starts from the
picture instead: encode it with the VAE *encoder* (the first time generation uses the encoder),
noise its latent to an intermediate timestep with ``scheduler.add_noise``, and run only the
remaining steps of the same loop (``sdlearn.sampling.denoise`` with ``start_step``)::

    z0 = vae.encode(image).latent_dist.sample(generator) * scaling_factor   # (B, 4, H/8, W/8)
    init_timestep = min(int(N * strength), N)       # how many of the N steps to run
    t_start = N - init_timestep                     # how many to skip
    x = scheduler.add_noise(z0, randn(...), timesteps[t_start * scheduler.order])
    x = denoise(pipe, x, ..., start_step=t_start)   # the last init_timestep steps only

(``scheduler.order`` is 1 for most schedulers; Heun's is 2, as each of its steps visits two
timesteps, so step ``t_start`` begins at entry ``2 * t_start`` of ``scheduler.timesteps``.)

``strength`` in (0, 1] is the share of the schedule that is re-run: 0.2 keeps the picture and
touches up details, 1.0 starts at the noisiest timestep (almost, but not quite, from scratch).

The random numbers are drawn in the pipeline's order — first the encoder's sample, then the
noise, then any noise the scheduler draws in ``step()`` — so ``img2img`` gives
``StableDiffusionImg2ImgPipeline``'s pictures exactly.

Introduced in notebooks/06_img2img.ipynb.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from .images import as_rgb, check_strength
from .latents import encode, to_vae_input
from .sampling import Callback, check_args, decode, denoise, encode_text

if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["check_image_args", "get_timesteps", "start_timesteps", "strength_table", "encode_image", "noised_latents",
           "start_latents", "img2img"]


def check_image_args(pipe: Pipeline, prompt: str | Sequence[str], negative_prompt: str | Sequence[str] | None,
                     image: Any, strength: Any, num_inference_steps: int, guidance_scale: float,
                     generator: Any, output_type: str) -> tuple[Image.Image, int, int, int, float]:
    """Everything an image-conditioned call checks before any compute (``ValueError``):
    (the picture as RGB, batch, height, width, strength). Shared by img2img, inpainting and
    depth2img: the picture by ``as_rgb``, the rest by ``sdlearn.sampling.check_args`` (at the
    picture's size) and ``check_strength``.

    Introduced in notebooks/06_img2img.ipynb.
    """
    image = as_rgb(image)
    batch, height, width = check_args(pipe, prompt, negative_prompt, image.height, image.width,
                                      num_inference_steps, guidance_scale, generator, output_type)
    return image, batch, height, width, check_strength(strength, num_inference_steps)


def get_timesteps(num_inference_steps: int, strength: float) -> tuple[int, int]:
    """(init_timestep, t_start): how many steps run, how many are skipped — diffusers' rule::

        init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
        t_start = num_inference_steps - init_timestep

    Introduced in notebooks/06_img2img.ipynb.
    """
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    return init_timestep, max(num_inference_steps - init_timestep, 0)


def start_timesteps(scheduler: Any, num_inference_steps: int, strength: float) -> tuple[int, torch.Tensor]:
    """After ``scheduler.set_timesteps(N)``: (t_start, the timesteps that will run).

    As the pipelines' ``get_timesteps``, the slice starts at ``t_start * scheduler.order`` and
    the scheduler is told where it begins (``set_begin_index``) *before* ``add_noise`` is called:
    sigma-space schedulers (Euler...) look their sigma up by that index.

    Introduced in notebooks/06_img2img.ipynb.
    """
    _, t_start = get_timesteps(num_inference_steps, strength)
    begin = t_start * scheduler.order
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return t_start, scheduler.timesteps[begin:]


def strength_table(scheduler: Any, num_inference_steps: int,
                   strengths: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)) -> list[dict]:
    """One row per strength: ``strength``, ``init_timestep`` (steps run), ``t_start`` (steps
    skipped), ``t_first`` (the timestep the picture is noised to) and ``run`` (a bool per entry
    of ``scheduler.timesteps``: is it run?). Calls ``scheduler.set_timesteps``.

    Introduced in notebooks/06_img2img.ipynb.
    """
    scheduler.set_timesteps(num_inference_steps)
    all_t = scheduler.timesteps
    rows = []
    for s in strengths:
        init_timestep, t_start = get_timesteps(num_inference_steps, s)
        begin = t_start * scheduler.order
        rows.append({"strength": s, "init_timestep": init_timestep, "t_start": t_start,
                     "t_first": float(all_t[begin]) if begin < len(all_t) else None,
                     "run": [j >= begin for j in range(len(all_t))]})
    return rows


def encode_image(pipe: Pipeline, pixels: torch.Tensor, generator: Any = None) -> torch.Tensor:
    """Scaled latents ``z0`` of (B, 3, H, W) pixels in [-1, 1], *sampled* from the encoder's
    Gaussian as the pipelines do (one generator for the whole batch, or one per row).

    Introduced in notebooks/06_img2img.ipynb.
    """
    if isinstance(generator, list):
        return torch.cat([encode(pipe.vae, pixels[i:i + 1], sample=True, generator=g)
                          for i, g in enumerate(generator)])
    return encode(pipe.vae, pixels, sample=True, generator=generator)


def noised_latents(pipe: Pipeline, z0: torch.Tensor, t: torch.Tensor, generator: Any = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, noise): ``scheduler.add_noise(z0, noise, t)`` with fresh N(0, I) noise drawn like
    ``sdlearn.sampling.initial_latents`` (on the generator's device, then moved).

    DDPM-style: x_t = sqrt(ab_t) z0 + sqrt(1 - ab_t) noise; sigma-space: z0 + sigma_t noise.

    Introduced in notebooks/06_img2img.ipynb.
    """
    noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    t = t.reshape(-1)
    return pipe.scheduler.add_noise(z0, noise, t.repeat(z0.shape[0] // t.shape[0])), noise


def start_latents(pipe: Pipeline, image: Image.Image, batch: int, num_inference_steps: int, strength: float,
                  dtype: torch.dtype, generator: Any = None) -> tuple[int, torch.Tensor]:
    """Set the timesteps, encode the picture and noise it to the first timestep that runs:
    (t_start, x) for ``denoise(..., start_step=t_start)``. Shared by img2img and depth2img.

    Introduced in notebooks/06_img2img.ipynb.
    """
    pipe.scheduler.set_timesteps(int(num_inference_steps), device=pipe._execution_device)
    t_start, timesteps = start_timesteps(pipe.scheduler, num_inference_steps, strength)
    # The picture once per prompt, converted as the pipeline converts a list of pictures (its
    # memory layout, channels-last, selects the conv kernels: .repeat() would differ by 1e-6).
    pixels = to_vae_input(pipe.vae, [image] * batch).to(dtype=dtype)
    z0 = encode_image(pipe, pixels, generator)  # random draw 1: the encoder's sample
    x, _ = noised_latents(pipe, z0, timesteps[:1], generator)  # draw 2: the noise
    return t_start, x


def img2img(pipe: Pipeline, prompt: str | Sequence[str], image: Any, strength: float = 0.8,
            num_inference_steps: int = 25, guidance_scale: float = 7.5,
            negative_prompt: str | Sequence[str] | None = None, generator: Any = None,
            output_type: str = "pil", callback: Callback | None = None, *, eta: float = 0.0) -> Any:
    """Repaint ``image`` towards ``prompt``; ``StableDiffusionImg2ImgPipeline``'s result, bit for
    bit on the CPU (same seed and scheduler, the picture passed once per prompt).

    ``image``: RGB picture (see ``sdlearn.images.as_rgb``) whose sides are multiples of the VAE factor (8); it
    is not resized — pick the model's native size. ``strength`` in (0, 1]: the share of the
    ``num_inference_steps`` that is run. Other arguments as ``sdlearn.sampling.sample``. Every
    argument is checked (``ValueError``) before any model runs.

    Introduced in notebooks/06_img2img.ipynb.
    """
    image, batch, _, _, strength = check_image_args(pipe, prompt, negative_prompt, image, strength,
                                                    num_inference_steps, guidance_scale, generator,
                                                    output_type)
    device = pipe._execution_device
    with torch.no_grad():
        embeds = encode_text(pipe, prompt, negative_prompt, guidance_scale, device)
        t_start, x = start_latents(pipe, image, batch, num_inference_steps, strength, embeds.dtype, generator)
        x = denoise(pipe, x, embeds, guidance_scale, start_step=t_start, generator=generator,
                    eta=eta, callback=callback)
        images = decode(pipe, x, output_type)
    pipe.maybe_free_model_hooks()
    return images
