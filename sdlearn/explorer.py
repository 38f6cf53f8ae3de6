"""What the explorer dashboard computes, without any widget: settings in, picture + steps + maps out.

``Explorer.run(settings)`` is one generation: it checks every setting first (``ValueError``,
nothing computed: the dashboard only shows the message), swaps in the chosen scheduler on its
*own* pipeline object (the caller's ``pipe`` keeps its scheduler), samples with
``sdlearn.sampling.sample`` — or ``sdlearn.img2img.img2img`` when ``mode="img2img"`` — while a
``StepRecorder`` keeps every step (the ``callback`` dict) and ``capture_cross_attention`` records
the cross-attention maps. ``sdlearn.widgets.explorer`` wires ipywidgets to it; tests and
benchmarks call it directly.

Introduced in notebooks/10_explorer.ipynb.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from .attention import capture_cross_attention, token_maps
from .device import make_generator
from .images import as_rgb, check_strength, demo_image
from .img2img import img2img
from .models import with_components
from .sampling import StepRecorder, check_args, sample, uses_cfg
from .schedulers import SCHEDULERS, available_schedulers, make_scheduler

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

    from .models import Pipeline

__all__ = ["Settings", "Result", "Explorer", "size_options", "MODES", "slerp", "walk"]

MODES = ("txt2img", "img2img")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the dashboard's controls set, by keyword (``Settings(prompt=..., seed=3)``).
    ``size=None`` is the model's native size.

    Introduced in notebooks/10_explorer.ipynb.
    """

    prompt: str = "a red circle on a blue background"
    negative_prompt: str = ""
    guidance_scale: float = 7.5
    num_inference_steps: int = 20
    seed: int = 0
    scheduler: str = "ddim"
    size: int | None = None
    mode: str = "txt2img"
    strength: float = 0.6

    def but(self, **changes: Any) -> Settings:
        """A copy with some settings changed."""
        return replace(self, **changes)


@dataclass
class Result:
    """One generation: the picture, every step's callback dict, the prompt tokens' attention maps.

    Introduced in notebooks/10_explorer.ipynb.
    """

    settings: Settings
    image: Image.Image
    steps: list[dict]
    maps: dict[str, np.ndarray]
    seconds: float
    unet_passes_per_step: int
    notes: list[str] = field(default_factory=list)


def size_options(pipe: Pipeline) -> list[int]:
    """Square sizes to offer: 3/4, 1, 5/4, 3/2 and 2 times the native size, multiples of 8.

    sd-mini's native size is 128 (so 96 ... 256), SD 1.5's 512 (384 ... 1024). Sizes other than
    the native one work — the UNet is convolutional — but the model never saw them in training.

    Introduced in notebooks/10_explorer.ipynb.
    """
    f = pipe.vae_scale_factor
    native = pipe.unet.config.sample_size * f
    return sorted({max(f, round(native * k / f) * f) for k in (0.75, 1.0, 1.25, 1.5, 2.0)})


class Explorer:
    """Runs generations for the dashboard on a private pipeline object over ``pipe``'s modules.

    ``init_image`` is the picture img2img starts from (default: the bundled world scene).

    Introduced in notebooks/10_explorer.ipynb.
    """

    def __init__(self, pipe: Pipeline, init_image: Any = None) -> None:
        self.pipe = with_components(pipe)  # own scheduler slot; the modules are shared, not copied
        self._own = type(pipe.scheduler).__name__
        self.native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        self.init_image = as_rgb(demo_image("world") if init_image is None else init_image, "init_image")
        self._schedulers: dict[str, SchedulerMixin] = {}

    def own_scheduler(self) -> str:
        """The short name of the scheduler the model ships with ("ddim" for sd-mini, "pndm" for SD 1.5)."""
        return next((name for name, spec in SCHEDULERS.items() if spec.cls == self._own and not spec.overrides),
                    "ddim")

    def scheduler_names(self) -> list[str]:
        """The ``SCHEDULERS`` names this pipeline can use here."""
        return available_schedulers(self.pipe)

    def _scheduler(self, name: str) -> SchedulerMixin:
        if name not in self._schedulers:  # make_scheduler refuses unknown or unusable names
            self._schedulers[name] = make_scheduler(self.pipe, name)
        return self._schedulers[name]

    def run(self, s: Settings) -> Result:
        """Generate the picture for ``s``; every step is recorded, attention captured.

        Every setting is checked first, and a bad one raises ``ValueError`` before anything is
        computed: the mode and the prompt here, the scheduler by ``make_scheduler``, the rest by
        the sampling checks (``check_args``, and ``check_strength`` for img2img).

        Introduced in notebooks/10_explorer.ipynb.
        """
        if s.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {s.mode!r}")
        scheduler = self._scheduler(s.scheduler)
        if not isinstance(s.prompt, str) or not s.prompt.strip():
            raise ValueError("the prompt is empty: type what the picture should show")
        size = s.size or self.native
        check_args(self.pipe, s.prompt, s.negative_prompt or None, size, size, s.num_inference_steps,
                   s.guidance_scale)
        if s.mode == "img2img":
            check_strength(s.strength, s.num_inference_steps)
        self.pipe.scheduler = scheduler
        rec, notes = StepRecorder(), []
        t0 = time.perf_counter()
        with torch.inference_mode(), capture_cross_attention(self.pipe.unet) as store:
            kwargs = dict(num_inference_steps=s.num_inference_steps, guidance_scale=s.guidance_scale,
                          negative_prompt=s.negative_prompt or None,
                          generator=make_generator(s.seed), callback=rec)
            if s.mode == "img2img":
                src = self.init_image.resize((size, size), Image.BICUBIC) if self.init_image.size != (size, size) \
                    else self.init_image
                image = img2img(self.pipe, s.prompt, src, strength=s.strength, **kwargs)[0]
            else:
                image = sample(self.pipe, s.prompt, height=size, width=size, **kwargs)[0]
        seconds = time.perf_counter() - t0
        lat = size // self.pipe.vae_scale_factor
        maps = token_maps(store, self.pipe.tokenizer, s.prompt, size=(lat, lat))
        if size != self.native:
            notes.append(f"{size} px is not the native {self.native} px")
        passes = 2 if uses_cfg(self.pipe, s.guidance_scale) else 1
        return Result(s, image, rec.steps, maps, seconds, passes, notes)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float, parallel: float = 1e-4) -> torch.Tensor:
    """Spherical interpolation from ``a`` (``t=0``) to ``b`` (``t=1``), the tensors read as vectors:
    ``sin((1-t) θ)/sin θ · a + sin(t θ)/sin θ · b`` with θ the angle between them.

    For two independent Gaussian noises of equal size it keeps the norm — every point on the
    path is as large as real starting noise — where ``torch.lerp``'s midpoint is about 0.71 times
    smaller. Nearly parallel vectors (``sin θ < parallel``) fall back to the straight line.

    Introduced in notebooks/10_explorer.ipynb.
    """
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        raise ValueError(f"slerp needs two tensors of one shape, got {getattr(a, 'shape', type(a))} "
                         f"and {getattr(b, 'shape', type(b))}")
    if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
        raise ValueError(f"t must be a finite number (0: a, 1: b), got {t!r}")
    x, y = a.double().flatten(), b.double().flatten()
    na, nb = x.norm(), y.norm()
    if na == 0 or nb == 0:
        raise ValueError("slerp needs two non-zero tensors: the angle to a zero vector is undefined")
    theta = torch.arccos((x @ y / (na * nb)).clamp(-1.0, 1.0))
    if torch.sin(theta) < parallel:
        out = torch.lerp(x, y, float(t))
    else:
        out = (torch.sin((1 - t) * theta) * x + torch.sin(t * theta) * y) / torch.sin(theta)
    return out.reshape(a.shape).to(a.dtype)


def walk(a: torch.Tensor, b: torch.Tensor, n: int, how: str = "slerp") -> list[torch.Tensor]:
    """``n`` evenly spaced points from ``a`` to ``b`` (both ends included), by ``"slerp"`` (for
    Gaussian noises) or ``"lerp"`` (for prompt embeddings, as in the fastai course's *Stable
    Diffusion Deep Dive*).

    Introduced in notebooks/10_explorer.ipynb.
    """
    if how not in ("slerp", "lerp"):
        raise ValueError(f'how must be "slerp" or "lerp", got {how!r}')
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"a walk needs n >= 2 points (both ends), got {n!r}")
    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        raise ValueError("walk needs two tensors of one shape")
    ts = [k / (n - 1) for k in range(n)]
    return [slerp(a, b, t) if how == "slerp" else torch.lerp(a, b, t) for t in ts]
