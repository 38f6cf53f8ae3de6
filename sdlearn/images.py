"""Loading pictures: local files, URLs, and the small demo images bundled with sdlearn.

The course runs offline, so every notebook uses the bundled demo images (``demo_image``,
``demo_mask``, ``demo_depth``); ``load_image`` is there for readers who want to try their own
pictures. ``DEMO_URLS`` records the CompVis sample pictures that the original Stable Diffusion
demos used, as text only: nothing in sdlearn downloads them.

The pictures the image-conditioned tasks (img2img, inpainting, depth2img) take are checked here
too, before any compute: ``as_rgb`` (one rule for pictures that are not RGB) and ``check_strength``
(``sdlearn.img2img.check_image_args`` adds the prompt checks of ``sdlearn.sampling``).

Introduced in notebooks/01_vae_latents.ipynb.
"""
from __future__ import annotations

import errno
import io
import numbers
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["DEMO_URLS", "load_image", "demo_image", "demo_mask", "demo_depth", "demo_names",
           "as_rgb", "check_strength"]

# Where the original img2img / inpainting demos got their pictures (not bundled, not downloaded).
DEMO_URLS: dict[str, str] = {
    "img2img": "https://raw.githubusercontent.com/CompVis/stable-diffusion/main/assets/"
               "stable-samples/img2img/sketch-mountains-input.jpg",
    "inpaint_image": "https://raw.githubusercontent.com/CompVis/latent-diffusion/main/data/"
                     "inpainting_examples/overture-creations-5sI6fQgYIuo.png",
    "inpaint_mask": "https://raw.githubusercontent.com/CompVis/latent-diffusion/main/data/"
                    "inpainting_examples/overture-creations-5sI6fQgYIuo_mask.png",
}

# name -> (image file, mask file or None, depth file or None), all under sdlearn/data/images/.
# Built once by scripts/make_demo_images.py; sources and licences in data/images/LICENSE.md.
_DEMOS: dict[str, tuple[str, str | None, str | None]] = {
    "cat": ("cat.png", "cat_mask.png", None),
    "astronaut": ("astronaut.png", None, None),
    "world": ("world_scene.png", "world_mask.png", "world_depth.png"),
}


def _is_url(src: str | Path) -> bool:
    return isinstance(src, str) and src.lower().startswith(("http://", "https://"))


def _read_url(url: str, timeout: float, max_bytes: int) -> bytes:
    """Download at most ``max_bytes`` bytes; refuse anything bigger rather than truncate it."""
    req = urllib.request.Request(url, headers={"User-Agent": "sdlearn"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            # A declared size lets us fail fast; still cap the read: servers can lie or omit it.
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                raise ValueError(f"{url} is {int(declared):,} bytes, more than max_bytes="
                                 f"{max_bytes:,}; pass a larger max_bytes if you trust it")
            data = resp.read(max_bytes + 1)
    except TimeoutError as e:  # socket.timeout is TimeoutError since Python 3.10
        raise TimeoutError(f"no answer from {url} within timeout={timeout}s") from e
    except urllib.error.URLError as e:
        if isinstance(e.reason, TimeoutError):
            raise TimeoutError(f"no answer from {url} within timeout={timeout}s") from e
        raise
    if len(data) > max_bytes:
        raise ValueError(f"{url} is larger than max_bytes={max_bytes:,}; "
                         "pass a larger max_bytes if you trust it")
    return data


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB, with transparent areas shown on white.

    A plain ``convert("RGB")`` keeps whatever colour hides under transparent pixels (often black
    or junk), which would then be fed to the VAE as if it were part of the picture.
    """
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _size_tuple(size: int | tuple[int, int]) -> tuple[int, int]:
    wh = (size, size) if isinstance(size, int) else tuple(size)
    if len(wh) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in wh):
        raise ValueError(f"size must be a positive int or a (width, height) pair, got {size!r}")
    return int(wh[0]), int(wh[1])


def load_image(path_or_url: str | Path, size: int | tuple[int, int] | None = None,
               timeout: float = 10.0, max_bytes: int = 20_000_000) -> Image.Image:
    """Open a local file or an http(s) URL as an RGB ``PIL.Image``.

    Args:
        path_or_url: a file path, or a string starting with ``http://`` / ``https://``.
        size: ``None`` keeps the original size; an int resizes to ``size`` x ``size``; a
            ``(width, height)`` pair resizes to exactly that. The aspect ratio is *not* kept:
            Stable Diffusion wants sides that are multiples of 8, so pick them yourself.
        timeout: seconds to wait for the server (URLs only); raises ``TimeoutError`` after.
        max_bytes: refuse (``ValueError``) to download more than this many bytes.

    The EXIF orientation is applied (phone photos otherwise come out sideways) and transparent
    areas are composited on white. Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` for a file that is not a readable image.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    if _is_url(path_or_url):
        src = str(path_or_url)
        data: bytes | Path = _read_url(src, timeout, max_bytes)
    else:
        path = Path(path_or_url).expanduser()
        src = str(path)
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, f"no image file at {src!r}", src)
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, f"{src!r} is a folder, not an image file", src)
        data = path
    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as img:
            img.load()  # decode now: truncated files only fail here, and the file gets closed
            img = ImageOps.exif_transpose(img)
            img = _to_rgb(img)
    except UnidentifiedImageError as e:
        raise ValueError(f"{src!r} is not an image file PIL can read") from e
    except OSError as e:  # e.g. "image file is truncated"
        raise ValueError(f"could not decode the image {src!r}: {e}") from e
    if size is not None:
        img = img.resize(_size_tuple(size), Image.Resampling.LANCZOS)
    return img


def demo_names() -> list[str]:
    """Names accepted by ``demo_image``.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    return list(_DEMOS)


def _demo_entry(name: str, kind: int, what: str) -> str:
    valid = [n for n, files in _DEMOS.items() if files[kind] is not None]
    if name not in _DEMOS or _DEMOS[name][kind] is None:
        raise ValueError(f"no demo {what} called {name!r}; valid names: {', '.join(valid)}")
    return _DEMOS[name][kind]  # type: ignore[return-value]


def _open_packaged(filename: str) -> Image.Image:
    # importlib.resources works whether sdlearn is a source checkout, a wheel or a zip.
    data = resources.files("sdlearn").joinpath("data", "images", filename).read_bytes()
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def demo_image(name: str = "cat") -> Image.Image:
    """A bundled demo picture as RGB: ``"cat"`` and ``"astronaut"`` (512x512, photos) or
    ``"world"`` (128x128, sd-mini's native size: a scene of ``sdlearn.mini.world``, "a blue circle
    on the right on a yellow background"). Sources and licences: ``sdlearn/data/images/LICENSE.md``.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    return _open_packaged(_demo_entry(name, 0, "image")).convert("RGB")


def demo_mask(name: str = "cat") -> Image.Image:
    """The inpainting mask for a demo image, mode ``"L"``, same size as ``demo_image(name)``:
    255 (white) = repaint, 0 (black) = keep. Exists for ``"cat"`` (an ellipse over the eyes
    and nose) and ``"world"`` (the object).

    Introduced in notebooks/07_inpainting.ipynb.
    """
    return _open_packaged(_demo_entry(name, 1, "mask")).convert("L")


def demo_depth(name: str = "world") -> np.ndarray:
    """The depth map of a demo image as a float32 ``(H, W)`` array in [0, 1], 1 = near.
    Only ``"world"`` has one (the 128x128 world scene, stored with 8-bit precision).

    Introduced in notebooks/08_depth2img.ipynb.
    """
    img = _open_packaged(_demo_entry(name, 2, "depth map")).convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def as_rgb(image: Any, name: str = "image") -> Image.Image:
    """The picture as an RGB ``PIL.Image``, or a ``ValueError`` saying why it cannot be one.

    Accepted: a ``PIL.Image`` or a uint8 numpy array, (H, W) grey or (H, W, 3|4). The rule for
    pictures that are not RGB:

    * grey (``L``, ``1``): the grey value is copied to R, G and B (nothing is lost);
    * with transparency (``RGBA``, ``LA``, ``P``, ``PA``): composited on **white**, as
      ``load_image`` does — a plain ``convert("RGB")`` would feed the VAE
      whatever colour hides under transparent pixels (often black);
    * any other mode (``CMYK``, ``I;16``, ``F``, ``YCbCr``...): refused; convert it yourself,
      knowing what its values mean.

    Introduced in notebooks/06_img2img.ipynb.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (
                image.ndim == 3 and image.shape[-1] not in (3, 4)):
            raise ValueError(f"{name} as an array must be uint8 of shape (H, W), (H, W, 3) or "
                             f"(H, W, 4), got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise ValueError(f"{name} must be a PIL picture or a uint8 array, got {type(image).__name__}"
                         " (for a tensor: sdlearn.plotting.to_pil(x) first)")
    if image.mode == "RGB":
        return image
    if image.mode in ("L", "1", "RGBA", "LA", "P", "PA"):
        return _to_rgb(image)
    raise ValueError(f"{name} has mode {image.mode!r}; expected RGB (grey L and RGBA are converted,"
                     f" RGBA onto white). Convert it first, e.g. {name}.convert('RGB')")


def check_strength(strength: Any, num_inference_steps: int) -> float:
    """``strength`` must be a number in (0, 1] that leaves at least one step to run.

    diffusers accepts 0 too, but ``int(num_inference_steps * strength)`` steps would be run and
    zero steps cannot denoise anything (the pipeline then fails deep inside); so do low
    strengths with few steps (0.05 x 10 -> 0). Raises ``ValueError``.

    Introduced in notebooks/06_img2img.ipynb.
    """
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not 0 < strength <= 1:
        raise ValueError(f"strength must be a number in (0, 1] (the share of the steps to re-run), "
                         f"got {strength!r}")
    if int(num_inference_steps * strength) < 1:
        raise ValueError(f"strength {strength} x {num_inference_steps} steps rounds down to 0 steps "
                         "to run: raise strength or num_inference_steps")
    return float(strength)
