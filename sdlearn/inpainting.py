"""Inpainting: repaint only where a mask is white, keep the rest — two ways.

Both reuse the one sampling loop (``sdlearn.sampling.denoise``); they differ in how the model
learns which part of the picture is known.

1. **Re-blending (any 4-channel txt2img UNet, the "legacy" path).** The UNet never sees the
   mask. After every step the known region is pasted back, noised to the *next* timestep so it
   matches the noise level of the latents around it (``denoise(..., step_hook=KnownRegionBlend)``)::

       latents = (1 - m) * scheduler.add_noise(z0_known, noise, t_next) + m * latents

   (after the last step the clean ``z0_known`` itself). Cheap and needs no special model, but
   the model repaints the hole without being told what surrounds it: seams are common.
2. **A 9-channel inpainting UNet** (``sd15-inpaint``), fine-tuned with the mask and the masked
   picture as extra input channels, ``cat([latents, mask, masked_image_latents])`` = 4 + 1 + 4
   (``denoise(..., extra_channels=...)``). It sees the context and blends it in.

``inpaint`` picks the path from ``unet.config.in_channels`` and gives
``StableDiffusionInpaintPipeline``'s pictures bit for bit on the CPU: same mask processing (binarised
at 0.5, white = repaint; nearest-neighbour down to latent size), same random draws in the same
order (image latents, noise, masked-image latents, then the scheduler's).

Introduced in notebooks/07_inpainting.ipynb.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from scipy import ndimage

from .images import as_rgb
from .img2img import check_image_args, encode_image, start_timesteps
from .latents import psnr, to_vae_input
from .sampling import Callback, decode, denoise, encode_text

if TYPE_CHECKING:
    from diffusers import StableDiffusionInpaintPipeline

    from .models import Pipeline

__all__ = ["as_mask", "mask_tensors", "inpaint_condition", "block_mask", "unet_kind", "KnownRegionBlend", "inpaint",
           "random_inpainting_pipeline", "psnr_outside"]


def as_mask(mask: Any, size: tuple[int, int] | None = None) -> Image.Image:
    """The mask as a single-channel ``"L"`` picture (255 = repaint, 0 = keep), or ``ValueError``.

    Accepted: a ``PIL.Image`` (``L``, ``1``; ``RGB``/``RGBA``/``P`` only if grey, see below) or
    a numpy array (H, W) of uint8, bool or floats in [0, 1]. A mask saved as RGB is converted to
    ``L`` **only if its three channels are equal** (a grey picture stored as colour); a coloured
    mask is ambiguous (is red "repaint"?) and refused, as is a mask with transparent pixels.
    ``size`` = (width, height): the size the picture has; a different mask size is an error
    (resize it yourself, with ``Image.NEAREST`` so it stays black and white).

    Introduced in notebooks/07_inpainting.ipynb.
    """
    if isinstance(mask, np.ndarray):
        arr = mask[..., 0] if mask.ndim == 3 and mask.shape[-1] == 1 else mask
        if arr.ndim != 2:
            raise ValueError(f"mask must be single-channel: an (H, W) array, got shape {mask.shape}")
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.floating):
            if arr.size and not (np.nanmin(arr) >= 0 and np.nanmax(arr) <= 1):
                raise ValueError("a float mask must have values in [0, 1] (1 = repaint)")
            arr = np.round(arr * 255).astype(np.uint8)
        elif arr.dtype != np.uint8:
            raise ValueError(f"mask array must be uint8, bool or float, got {arr.dtype}")
        mask = Image.fromarray(arr, "L")
    if not isinstance(mask, Image.Image):
        raise ValueError(f"mask must be a PIL picture or an array, got {type(mask).__name__}")
    if mask.mode == "1":
        mask = mask.convert("L")
    elif mask.mode in ("RGB", "RGBA", "P", "LA", "PA"):
        rgba = np.asarray(mask.convert("RGBA"))
        if (rgba[..., 3] != 255).any():
            raise ValueError(f"mask (mode {mask.mode}) has transparent pixels; pass a single-"
                             "channel L mask (white = repaint, black = keep)")
        if not ((rgba[..., 0] == rgba[..., 1]) & (rgba[..., 1] == rgba[..., 2])).all():
            raise ValueError(f"mask (mode {mask.mode}) is not single-channel and its colour "
                             "channels differ; pass an L mask (white = repaint, black = keep)")
        mask = Image.fromarray(np.ascontiguousarray(rgba[..., 0]), "L")
    elif mask.mode != "L":
        raise ValueError(f"mask has mode {mask.mode!r}; expected a single-channel L mask")
    if size is not None and mask.size != tuple(size):
        raise ValueError(f"mask is {mask.width}x{mask.height} px but the picture is "
                         f"{size[0]}x{size[1]}: they must match")
    return mask


def mask_tensors(mask: Image.Image, batch: int, latent_hw: tuple[int, int]
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel mask (B, 1, H, W), latent mask (B, 1, h, w)), both exactly 0 or 1.

    Binarised at 0.5 (grey >= 128 repaints), as the pipeline's ``mask_processor``; shrunk with
    ``F.interpolate``'s default *nearest* mode, so each latent cell takes the value of one pixel
    (the top-left of its 8x8 block): the mask the model obeys is this coarse one.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    m = (m >= 0.5).to(torch.float32).repeat(batch, 1, 1, 1)
    return m, F.interpolate(m, size=latent_hw)


def inpaint_condition(pixels: torch.Tensor, mask: torch.Tensor,
                      encode: Callable[[torch.Tensor], torch.Tensor], vae_scale_factor: int) -> torch.Tensor:
    """The 5 extra input channels of a 9-channel inpainting UNet, ``cat([mask, masked latents])``.

    ``pixels`` (B, 3, H, W) in [-1, 1] and a binary ``mask`` (B, 1, H, W) (1 = repaint) give
    (B, 5, H/f, W/f) with f = ``vae_scale_factor``: the mask shrunk with ``F.interpolate``'s
    default *nearest* mode, then the latents of the masked picture (repainted pixels set to 0,
    grey), as diffusers' ``prepare_mask_latents`` builds them. ``encode`` maps (B, 3, H, W)
    pixels to scaled latents: ``inpaint`` samples the VAE's distribution with the pipeline's
    generator; training uses its mean.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    h, w = pixels.shape[-2] // vae_scale_factor, pixels.shape[-1] // vae_scale_factor
    masked_latents = encode(pixels * (mask < 0.5))  # (B, 4, H/f, W/f)
    small = F.interpolate(mask.float(), size=(h, w))  # (B, 1, H/f, W/f), nearest, as the pipeline
    return torch.cat([small.to(masked_latents), masked_latents], dim=1)


def block_mask(mask: Any, factor: int = 8) -> Image.Image:
    """Grow a mask to whole ``factor`` x ``factor`` blocks: a block is white if *any* of its
    pixels is (>= 128). Shrunk to latent size, this mask repaints every cell the object touches;
    the nearest-neighbour shrink of the original keeps cells whose top-left pixel is outside it,
    and with them slivers of the old object. ``factor``: ``pipe.vae_scale_factor``.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    arr = np.asarray(as_mask(mask)) >= 128
    h, w = arr.shape
    if h % factor or w % factor:
        raise ValueError(f"mask sides ({w}x{h}) must be multiples of factor={factor}")
    blocks = arr.reshape(h // factor, factor, w // factor, factor).any(axis=(1, 3))
    full = blocks.repeat(factor, axis=0).repeat(factor, axis=1)
    return Image.fromarray(full.astype(np.uint8) * 255, "L")


def unet_kind(pipe: Pipeline) -> str:
    """``"blend"`` for a UNet taking just the latents, ``"9-channel"`` for latents + mask + masked
    image latents; ``ValueError`` for anything else (a depth UNet, say).

    Introduced in notebooks/07_inpainting.ipynb.
    """
    lat, ch = pipe.vae.config.latent_channels, pipe.unet.config.in_channels
    if ch == lat:
        return "blend"
    if ch == 2 * lat + 1:
        return "9-channel"
    raise ValueError(f"the UNet takes {ch} input channels; inpainting needs {lat} (re-blending) or "
                     f"{2 * lat + 1} (an inpainting UNet)")


class KnownRegionBlend:
    """``denoise``'s ``step_hook`` for re-blending: after step ``i`` keep the model's latents
    where the mask is 1 and put the known latents back where it is 0, noised to the timestep
    the *next* step starts from (clean after the last step) — the pipeline's formula exactly::

        latents = (1 - m) * scheduler.add_noise(z0_known, noise, timesteps[i + 1]) + m * latents

    ``noise`` is the initial noise itself, so the known region stays on one noise trajectory.

    Introduced in notebooks/07_inpainting.ipynb.
    """

    def __init__(self, scheduler: Any, z0_known: torch.Tensor, noise: torch.Tensor,
                 mask_latent: torch.Tensor, timesteps: torch.Tensor) -> None:
        self.scheduler, self.z0, self.noise = scheduler, z0_known, noise
        self.mask, self.timesteps = mask_latent, timesteps

    def __call__(self, i: int, t: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        known = self.z0
        if i < len(self.timesteps) - 1:
            known = self.scheduler.add_noise(self.z0, self.noise, self.timesteps[i + 1:i + 2])
        return (1 - self.mask) * known + self.mask * latents


def inpaint(pipe: Pipeline, prompt: str | Sequence[str], image: Any, mask: Any, strength: float = 1.0,
            num_inference_steps: int = 25, guidance_scale: float = 7.5,
            negative_prompt: str | Sequence[str] | None = None, generator: Any = None,
            output_type: str = "pil", callback: Callback | None = None, *, eta: float = 0.0) -> Any:
    """Repaint the white part of ``mask`` in ``image`` following ``prompt``, keep the black part.

    The same pictures as ``StableDiffusionInpaintPipeline`` (bit for bit on the CPU; same seed
    and scheduler; with a prompt list, the picture and mask passed once per prompt), for both
    UNet kinds (``unet_kind``). ``image``: RGB (see ``sdlearn.images.as_rgb``), sides multiples
    of 8, not resized; ``mask``: see ``as_mask``, same size. ``strength`` (default 1.0, start
    from pure noise) as in img2img. All inputs are checked (``ValueError``) before any compute.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    image, batch, height, width, strength = check_image_args(pipe, prompt, negative_prompt, image, strength,
                                                             num_inference_steps, guidance_scale,
                                                             generator, output_type)
    mask = as_mask(mask, image.size)
    kind = unet_kind(pipe)
    device, scheduler = pipe._execution_device, pipe.scheduler
    with torch.no_grad():
        embeds = encode_text(pipe, prompt, negative_prompt, guidance_scale, device)
        scheduler.set_timesteps(int(num_inference_steps), device=device)
        t_start, timesteps = start_timesteps(scheduler, num_inference_steps, strength)
        pixels = to_vae_input(pipe.vae, [image] * batch).to(dtype=embeds.dtype)  # (B, 3, H, W)
        f = pipe.vae_scale_factor
        m_pix, m_lat = mask_tensors(mask, batch, (height // f, width // f))
        m_pix, m_lat = m_pix.to(pixels.device), m_lat.to(device=device, dtype=embeds.dtype)
        # Random draws in the pipeline's order. 1: the picture's latents (re-blending needs them;
        # so does a start part-way, strength < 1).
        z0 = encode_image(pipe, pixels, generator) if kind == "blend" or strength < 1 else None
        # The encoder returns channels-last memory (as its input is); the pipeline's copy of the
        # latents is contiguous, and the layout of what the UNet gets decides its kernels (1e-6).
        z0 = None if z0 is None else z0.contiguous()
        shape = (batch, pipe.vae.config.latent_channels, height // f, width // f)
        noise = randn_tensor(shape, generator=generator, device=device, dtype=embeds.dtype)  # 2
        if strength == 1:  # pure noise, as txt2img: nothing of the picture under the mask
            x = noise * scheduler.init_noise_sigma
        else:
            x = scheduler.add_noise(z0, noise, timesteps[:1].repeat(batch))
        # 3: the masked picture's latents (grey, 0, where it will be repainted). The 9-channel
        # UNet reads them; the pipeline encodes them for re-blending too, so we draw them as well.
        extra = inpaint_condition(pixels, m_pix, lambda x: encode_image(pipe, x, generator), f)
        if kind == "blend":
            hook = KnownRegionBlend(scheduler, z0, noise, m_lat, timesteps)
            x = denoise(pipe, x, embeds, guidance_scale, start_step=t_start, generator=generator,
                        eta=eta, callback=callback, step_hook=hook)
        else:
            x = denoise(pipe, x, embeds, guidance_scale, start_step=t_start, generator=generator,
                        eta=eta, callback=callback, extra_channels=extra)
        images = decode(pipe, x, output_type)
    pipe.maybe_free_model_hooks()
    return images


def random_inpainting_pipeline(seed: int = 0, device: str | torch.device | None = None
                               ) -> StableDiffusionInpaintPipeline:
    """A ``StableDiffusionInpaintPipeline`` of ``tiny``'s parts with a **random 9-channel UNet**
    (``tiny_unet(in_channels=9)``): runs the 9-channel code path offline, shapes and all. Its
    pictures are noise; use ``sd15-inpaint`` for real ones.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    from diffusers import StableDiffusionInpaintPipeline

    from .architectures import tiny_unet
    from .models import load_pipeline

    base = load_pipeline("tiny", task="inpaint", device=device)
    with torch.random.fork_rng(devices=[]):  # fixed weights, the global random stream untouched
        torch.manual_seed(seed)
        unet = tiny_unet(in_channels=2 * base.vae.config.latent_channels + 1)
    if base.unet.dtype != unet.dtype:  # built in fp32 on the CPU; move only when needed
        unet = unet.to(dtype=base.unet.dtype)
    if base.unet.device != unet.device:
        unet = unet.to(base.unet.device)
    pipe = StableDiffusionInpaintPipeline(**{**base.components, "unet": unet},
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def psnr_outside(original: Any, result: Any, mask: Any, margin: int = 0) -> float:
    """PSNR (dB) between two pictures over the pixels the mask keeps (black), in [0, 1] units.

    ``margin`` > 0 also leaves out pixels within ``margin`` px (diagonals too) of the repainted
    region: the VAE decodes each latent cell from its neighbours, so the seam's surroundings
    change a little even where the latents were kept exactly. Higher = better preserved.

    Introduced in notebooks/07_inpainting.ipynb.
    """
    a = np.asarray(as_rgb(original), dtype=np.float64) / 255
    b = np.asarray(as_rgb(result, "result"), dtype=np.float64) / 255
    m = np.asarray(as_mask(mask, as_rgb(original).size)) >= 128
    if a.shape != b.shape:
        raise ValueError(f"pictures differ in size: {a.shape} vs {b.shape}")
    if margin > 0:
        m = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool), iterations=margin)  # square
    if m.all():
        raise ValueError("the mask leaves no pixel outside it to compare")
    return psnr(a[~m], b[~m], data_range=1.0)
