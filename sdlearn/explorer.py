"""What the explorer dashboard computes, without any widget: settings in, picture + steps + maps out.

``Explorer.run(settings)`` is one generation: it checks every setting first (``ValueError``,
nothing computed), swaps in the chosen scheduler on its *own* pipeline object (the caller's
``pipe`` keeps its scheduler), samples with ``sdlearn.sampling.sample`` — or
``sdlearn.img2img.img2img`` when ``mode="img2img"`` — while a ``StepRecorder`` keeps every step
(the ``callback`` dict) and ``capture_cross_attention`` records the cross-attention maps.
``sdlearn.widgets.explorer`` wires ipywidgets to it; tests and benchmarks call it directly.

Introduced in notebooks/10_explorer.ipynb.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from PIL import Image

from .attention import capture_cross_attention, token_maps
from .device import make_generator
from .img2img import as_rgb, check_strength, img2img
from .models import with_components
from .sampling import StepRecorder, check_args, sample
from .schedulers import SCHEDULERS, make_scheduler

__all__ = ["Settings", "Result", "Explorer", "size_options", "MODES"]

MODES = ("txt2img", "img2img")


@dataclass(frozen=True)
class Settings:
    """Everything the dashboard's controls set. ``size=None`` is the model's native size.

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


def size_options(pipe: Any) -> list[int]:
    """Square sizes to offer: 3/4, 1, 5/4, 3/2 and 2 times the native size, multiples of 8.

    sd-mini's native size is 64 (so 48 ... 128), SD 1.5's 512 (384 ... 1024). Sizes other than
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

    def __init__(self, pipe: Any, init_image: Any = None) -> None:
        self.pipe = with_components(pipe)  # own scheduler slot; the modules are shared, not copied
        self._own = type(pipe.scheduler).__name__
        self.native = pipe.unet.config.sample_size * pipe.vae_scale_factor
        if init_image is None:
            from .images import demo_image

            init_image = demo_image("world")
        self.init_image = as_rgb(init_image, "init_image")
        self._schedulers: dict[str, Any] = {}

    def own_scheduler(self) -> str:
        """The short name of the scheduler the model ships with ("ddim" for sd-mini, "pndm" for SD 1.5)."""
        return next((k for k, v in SCHEDULERS.items() if v[0] == self._own and not v[1]), "ddim")

    def scheduler_names(self) -> list[str]:
        """The ``SCHEDULERS`` names this pipeline can use here."""
        from .schedulers import available_schedulers

        return available_schedulers(self.pipe)

    def check(self, s: Settings) -> None:
        """Raise ``ValueError`` for any bad setting, before anything is computed."""
        if s.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {s.mode!r}")
        if s.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {s.scheduler!r}; known: {', '.join(SCHEDULERS)}")
        if not isinstance(s.prompt, str) or not s.prompt.strip():
            raise ValueError("the prompt is empty: type what the picture should show")
        size = s.size or self.native
        check_args(self.pipe, s.prompt, s.negative_prompt or None, size, size,
                   s.num_inference_steps, s.guidance_scale)
        if s.mode == "img2img":
            check_strength(s.strength, s.num_inference_steps)

    def _scheduler(self, name: str) -> Any:
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(self.pipe, name)
        return self._schedulers[name]

    def run(self, s: Settings) -> Result:
        """Generate the picture for ``s``; every step is recorded, attention captured.

        Introduced in notebooks/10_explorer.ipynb.
        """
        self.check(s)
        self.pipe.scheduler = self._scheduler(s.scheduler)
        size = s.size or self.native
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
        cfg = 2 if s.guidance_scale > 1 else 1
        return Result(s, image, rec.steps, maps, seconds, cfg, notes)
