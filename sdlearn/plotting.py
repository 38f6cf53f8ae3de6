"""Showing pictures and latents in notebooks, whatever form they arrive in.

Stable Diffusion code passes pictures around as PIL images, numpy arrays and torch tensors in
[-1, 1] or [0, 1]; ``to_pil`` turns any of them into a PIL image so the ``show_*`` helpers can
take anything. The helpers follow the fastai habit: pass ``ax`` to draw into an existing axes
(or ``axes`` for a grid), leave it ``None`` to get a new figure, and get the axes back.

Introduced in notebooks/00_quick_tour.ipynb.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # matplotlib is imported lazily: importing sdlearn should not need a backend
    from matplotlib.axes import Axes

__all__ = ["to_pil", "show_image", "show_grid", "show_channels"]


def _is_tensor(x: Any) -> bool:
    # Duck-typed so that this module does not import torch just to check a type.
    return type(x).__module__.startswith("torch") and hasattr(x, "detach")


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    return (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # +0.5: round, not floor


def to_pil(img: Any) -> Image.Image:
    """Turn a picture in any of the course's formats into a ``PIL.Image`` (RGB or grey "L").

    Accepted inputs and how their values are read:

    * ``PIL.Image``: returned as is if RGB or L, else converted to RGB.
    * numpy ``uint8`` (H, W, 3|4) or (H, W): pixel values 0..255. ``bool`` arrays (masks):
      True = 255.
    * numpy float (H, W, C), (C, H, W) or (H, W): values in [0, 1], clipped.
    * torch tensor (C, H, W) or (1, C, H, W), C = 1 or 3: values in [-1, 1] if the tensor's
      minimum is < 0 (what the VAE decodes to), else in [0, 1]; clipped after rescaling.
      This guess is wrong for a [0, 1] image with a stray negative value: rescale it yourself
      with ``(x + 1) / 2`` or ``x.clamp(0, 1)`` first if that matters. A 4-channel tensor is
      taken to be a latent and refused: use ``show_channels`` for those.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    if isinstance(img, Image.Image):
        return img if img.mode in ("RGB", "L") else img.convert("RGB")
    if _is_tensor(img):
        t = img.detach().cpu().float()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3 or t.shape[0] not in (1, 3):
            latent = t.ndim == 3 and t.shape[0] == 4
            hint = " (looks like a latent: use show_channels)" if latent else ""
            raise ValueError(f"expected a (C, H, W) or (1, C, H, W) tensor with C = 1 or 3, "
                             f"got shape {tuple(img.shape)}{hint}")
        if t.min() < 0:
            t = (t + 1) / 2
        arr = t.permute(1, 2, 0).numpy()
        return Image.fromarray(_float_to_uint8(arr).squeeze(-1) if arr.shape[-1] == 1
                               else _float_to_uint8(arr))
    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)  # CHW -> HWC
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ValueError(f"cannot show an array of shape {arr.shape} as a picture")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"expected uint8 or float pixels, got {arr.dtype}")
        arr = _float_to_uint8(arr)
    pil = Image.fromarray(arr)
    return pil if pil.mode in ("RGB", "L") else pil.convert("RGB")


def _given_axes(axes: Any, n: int, what: str) -> np.ndarray:
    """Axes passed in by the caller, as a flat array; there must be one for each of the ``n`` ``what``."""
    flat = np.asarray(axes, dtype=object).ravel()
    if len(flat) < n:
        raise ValueError(f"got {n} {what} but only {len(flat)} axes")
    return flat


def _hide_ticks(ax: Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def show_image(img: Any, ax: Axes | None = None, title: str | None = None,
               figsize: tuple[float, float] = (4, 4)) -> Axes:
    """Draw one picture (anything ``to_pil`` accepts) without ticks; return its axes.

    Grey pictures (masks, depth maps) are drawn with a fixed 0..255 grey scale, so an all-white
    mask looks white rather than being stretched by matplotlib's autoscaling.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    import matplotlib.pyplot as plt

    pil = to_pil(img)
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    if pil.mode == "L":
        ax.imshow(np.asarray(pil), cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(np.asarray(pil))
    _hide_ticks(ax)
    if title is not None:
        ax.set_title(title)
    return ax


def show_grid(images: Sequence[Any] | Any, ncols: int | None = None,
              titles: Sequence[str] | None = None, axes: Any = None,
              figsize: tuple[float, float] | None = None) -> np.ndarray:
    """Draw several pictures in a grid; return a flat array with one axes per picture.

    ``images`` is a list of anything ``to_pil`` accepts, or a batch (N, C, H, W) tensor.
    ``ncols`` defaults to at most 4 per row. Pass ``axes`` (any array of at least
    ``len(images)`` axes) to draw into existing axes; otherwise a new figure is made and its
    leftover cells are removed.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    import matplotlib.pyplot as plt

    images = list(images)  # also splits a batch tensor / array along its first dimension
    n = len(images)
    if n == 0:
        raise ValueError("show_grid needs at least one image")
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {n} images but {len(titles)} titles")
    if axes is None:
        ncols = min(n, 4) if ncols is None else ncols
        nrows = math.ceil(n / ncols)
        figsize = figsize or (3 * ncols, 3 * nrows)
        _, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
        flat = grid.ravel()
        for extra in flat[n:]:
            extra.remove()
    else:
        flat = _given_axes(axes, n, "images")
    for i, (img, ax) in enumerate(zip(images, flat)):
        show_image(img, ax=ax, title=None if titles is None else titles[i])
    return flat[:n]


def show_channels(latents: Any, ax: Any = None, figsize: tuple[float, float] | None = None,
                  cmap: str = "gray") -> np.ndarray:
    """Draw each channel of a latent, (C, h, w) or (1, C, h, w) (SD's VAE: C = 4), as a grey
    panel; return a flat array of the C axes.

    Each panel is scaled to its own min..max: the channels have quite different ranges, and a
    shared scale would leave some of them a flat grey. Pass ``ax`` as a sequence of at least C
    axes to draw into existing ones.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    import matplotlib.pyplot as plt

    arr = latents.detach().cpu().float().numpy() if _is_tensor(latents) else np.asarray(latents)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"expected a (C, h, w) or (1, C, h, w) latent, got shape {arr.shape}")
    c = arr.shape[0]
    if ax is None:
        _, grid = plt.subplots(1, c, figsize=figsize or (2.5 * c, 2.5), squeeze=False)
        flat = grid.ravel()
    else:
        flat = _given_axes(ax, c, "latent channels")
    for i in range(c):
        flat[i].imshow(arr[i], cmap=cmap)
        flat[i].set_title(f"channel {i}")
        _hide_ticks(flat[i])
    return flat[:c]
