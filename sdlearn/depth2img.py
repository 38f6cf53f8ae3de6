"""Depth-to-image: img2img whose UNet also sees a depth map, as a fifth input channel.

SD 2-depth (and sd-mini's ``mini-depth``) widened the UNet's first convolution from 4 to 5 input
channels and was fine-tuned with the picture's depth map as the extra channel. At sampling time
the map is resized to the latent grid and stretched to [-1, 1] per picture; then the loop is
img2img's, with the depth appended to every UNet input::

    depth = depth_condition(depth_map, (H/8, W/8))       # (B, 1, H/8, W/8) in [-1, 1]
    z0 = vae.encode(image) * scaling_factor               # (B, 4, H/8, W/8)
    x = scheduler.add_noise(z0, noise, timesteps[t_start * scheduler.order])
    x = denoise(pipe, x, ..., start_step=t_start, extra_channels=depth)   # UNet input: 4 + 1

Because the depth enters every step, the *layout* (what is near, what is far: the objects'
silhouettes) is kept even at ``strength=1.0``, where the picture's colours are all but gone —
the prompt then repaints the same structure. Without a ``depth_map``, diffusers' pipeline
estimates one with DPT (``Intel/dpt-hybrid-midas``, a monocular depth network shipped with
SD 2-depth); here the depth is supplied, as the world renders it.

Introduced in notebooks/08_depth2img.ipynb.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .img2img import check_image_args, start_latents
from .sampling import Callback, decode, denoise, encode_text

if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["as_depth", "depth2img", "depth_condition", "structure_iou"]


def depth_condition(depth: torch.Tensor, latent_hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) depth -> (B, 1, h, w) in [-1, 1], exactly as ``prepare_depth_map`` in diffusers'
    ``StableDiffusionDepth2ImgPipeline`` does with a supplied ``depth_map``: bicubic resize to the
    latent grid, then a per-image min-max stretch (so only *relative* depth matters).

    Introduced in notebooks/08_depth2img.ipynb.
    """
    if depth.ndim != 3:
        raise ValueError(f"depth must be (B, H, W), got shape {tuple(depth.shape)}")
    d = F.interpolate(depth.unsqueeze(1).float(), size=latent_hw, mode="bicubic", align_corners=False)
    lo, hi = d.amin(dim=(1, 2, 3), keepdim=True), d.amax(dim=(1, 2, 3), keepdim=True)
    return 2.0 * (d - lo) / (hi - lo) - 1.0


def as_depth(depth: Any, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A depth map as a float32 (1, H, W) tensor, or a ``ValueError`` saying what is wrong.

    Accepted: a single-channel ``PIL.Image`` (``L``, ``I``, ``I;16``, ``F``), or a numpy array /
    tensor shaped (H, W), (1, H, W) or (H, W, 1). Any scale works (only relative depth counts:
    the map is min-max stretched), and larger = nearer or farther consistently with training
    (the world and DPT: larger = nearer). Any resolution is accepted, as the pipeline resizes it
    to the latent grid. Refused: several channels (an RGB picture is not a depth map), another
    aspect ratio than ``size`` = (width, height) of the picture, non-finite values, and a flat
    map (max = min, which the pipeline would turn into NaN).

    Introduced in notebooks/08_depth2img.ipynb.
    """
    if isinstance(depth, Image.Image):
        if depth.mode not in ("L", "I", "I;16", "F"):
            raise ValueError(f"the depth map has mode {depth.mode!r}: it must be single-channel "
                             "(L, I, I;16 or F); an RGB picture is not a depth map")
        arr = np.asarray(depth, dtype=np.float32)
    elif isinstance(depth, (np.ndarray, torch.Tensor)):
        arr = depth.detach().cpu().float().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth, np.float32)
    else:
        raise ValueError(f"the depth map must be a PIL image, an array or a tensor, got {type(depth).__name__}")
    if arr.ndim == 3 and 1 in (arr.shape[0], arr.shape[-1]):
        arr = arr.reshape(arr.shape[1:] if arr.shape[0] == 1 else arr.shape[:2])
    if arr.ndim != 2:
        raise ValueError(f"the depth map must be single-channel, (H, W) or (1, H, W); got shape {arr.shape}")
    if size is not None and abs(arr.shape[1] / arr.shape[0] - size[0] / size[1]) > 0.01 * size[0] / size[1]:
        # Any resolution is fine (the map is resized to the latent grid; DPT gives 384x384), but
        # another aspect ratio means a map of another picture, or a transposed one.
        raise ValueError(f"the depth map is {arr.shape[1]}x{arr.shape[0]} but the picture is "
                         f"{size[0]}x{size[1]}: not the same aspect ratio")
    if not np.isfinite(arr).all():
        raise ValueError("the depth map has NaN or infinite values")
    if float(arr.max()) <= float(arr.min()):
        raise ValueError("the depth map is flat (max = min): it carries no structure, and the "
                         "min-max stretch would divide by zero")
    return torch.from_numpy(np.array(arr, dtype=np.float32))[None]  # a copy: never aliases the input


def _check_depth_unet(pipe: Pipeline) -> None:
    """``ValueError`` unless the UNet takes 4 latent channels + 1 depth channel."""
    n = pipe.unet.config.in_channels
    if n != 5:
        raise ValueError(f"depth2img needs a depth-conditioned UNet (5 input channels); this one has "
                         f'{n}. Use load_pipeline("mini-depth") or load_pipeline("sd2-depth").')


def depth2img(pipe: Pipeline, prompt: str | Sequence[str], image: Any, depth_map: Any, strength: float = 0.8,
              num_inference_steps: int = 25, guidance_scale: float = 7.5,
              negative_prompt: str | Sequence[str] | None = None, generator: Any = None,
              output_type: str = "pil", callback: Callback | None = None, *, eta: float = 0.0) -> Any:
    """``StableDiffusionDepth2ImgPipeline(prompt, image, depth_map=...)`` by hand, with the same
    pictures (same seed, scheduler and settings), built from img2img's parts plus the depth channel.

    ``image``: RGB picture, sides multiples of 8; ``depth_map``: see ``as_depth`` (same size as
    the picture). Everything is checked before any model runs.

    Introduced in notebooks/08_depth2img.ipynb.
    """
    _check_depth_unet(pipe)
    image, batch, height, width, strength = check_image_args(pipe, prompt, negative_prompt, image, strength,
                                                             num_inference_steps, guidance_scale,
                                                             generator, output_type)
    depth = as_depth(depth_map, image.size)
    device = pipe._execution_device
    with torch.no_grad():
        # 1. encode prompt                                                  # (2B, 77, D) with CFG
        embeds = encode_text(pipe, prompt, negative_prompt, guidance_scale, device)
        # 2. depth at latent size, stretched to [-1, 1]: the UNet's 5th channel  # (B, 1, H/8, W/8)
        cond = depth_condition(depth.to(device, embeds.dtype), (height // pipe.vae_scale_factor,
                                                                 width // pipe.vae_scale_factor))
        cond = cond.repeat(batch, 1, 1, 1).to(embeds.dtype)
        # 3.-4. timesteps (skip the first 1 - strength), the picture's latents noised to the
        # first timestep that runs: exactly img2img's start                 # (B, 4, H/8, W/8)
        t_start, x = start_latents(pipe, image, batch, num_inference_steps, strength, embeds.dtype, generator)
        # 5. the loop, with the depth appended to every UNet input
        x = denoise(pipe, x, embeds, guidance_scale, start_step=t_start, generator=generator, eta=eta,
                    extra_channels=cond, callback=callback)
        images = decode(pipe, x, output_type)
    pipe.maybe_free_model_hooks()
    return images


def near_region(depth: Any, near: float = 0.45) -> np.ndarray:
    """(H, W) bool: a depth map's *near* region, the pixels above ``near`` of its min-max range
    (larger = nearer, as DPT and the world's maps have it). The silhouette ``structure_iou`` compares.

    Introduced in notebooks/08_depth2img.ipynb.
    """
    d = as_depth(depth)[0].numpy()
    return (d - d.min()) / (d.max() - d.min()) > near


def structure_iou(picture: Any, depth: Any, near: float = 0.45, colour_gap: float = 40.0) -> float:
    """How well a picture's layout follows a depth map: the IoU of its *foreground* (pixels whose
    colour is more than ``colour_gap`` from the border's median colour, the background) and the
    map's *near* region (depth above ``near`` of its min-max range). 1 = the same silhouettes.

    Written for sd-mini's world (flat backgrounds, objects standing out of a floor).

    Introduced in notebooks/08_depth2img.ipynb.
    """
    from .plotting import to_pil

    img = np.asarray(to_pil(picture).convert("RGB"), np.float32)
    d = as_depth(depth)[0].numpy()
    if d.shape != img.shape[:2]:
        d = np.asarray(Image.fromarray(d).resize((img.shape[1], img.shape[0]), Image.BILINEAR))
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    fg = np.linalg.norm(img - np.median(border, 0), axis=-1) > colour_gap
    nr = near_region(d, near)
    union = (fg | nr).sum()
    return float((fg & nr).sum() / union) if union else 1.0
