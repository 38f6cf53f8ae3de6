"""One registry of model names and one ``load_pipeline`` built on diffusers' own pipeline classes.

===============  =====================================================  ==========================
name             source                                                 what it is
===============  =====================================================  ==========================
``mini``         ``sdlearn/data/sd-mini`` (package data)                sd-mini, trained here; the
                                                                        default, runs offline
``mini-inpaint`` ``sdlearn/data/sd-mini-inpaint`` (UNet only)           sd-mini's 9-channel UNet
``mini-depth``   ``sdlearn/data/sd-mini-depth`` (UNet only)             sd-mini's 5-channel UNet
``tiny``         built from configs in ~1 s, random weights             SD 1.5's interface sizes
``sd15``         ``stable-diffusion-v1-5/stable-diffusion-v1-5``        the real SD 1.5 (hub)
``sd15-inpaint`` ``stable-diffusion-v1-5/stable-diffusion-inpainting``  9-channel inpainting UNet
``sd2-depth``    ``sd2-community/stable-diffusion-2-depth``             depth-conditioned SD 2
===============  =====================================================  ==========================

Any local diffusers folder works too. The default comes from ``$SDLEARN_MODEL``, else ``mini``.

Introduced in notebooks/00_quick_tour.ipynb.
"""
from __future__ import annotations

import inspect
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from diffusers import (
    DiffusionPipeline,
    StableDiffusionDepth2ImgPipeline,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
)

from .device import pick_device, pick_dtype

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, SchedulerMixin, UNet2DConditionModel
    from diffusers.image_processor import VaeImageProcessor
    from transformers import CLIPTextModel, CLIPTokenizer


class Pipeline(Protocol):
    """What the course uses of a diffusers Stable Diffusion pipeline: its five parts, two helpers
    built from them and three methods. ``StableDiffusionPipeline`` and its img2img, inpainting
    and depth siblings all have them, whatever the model's size (``load_pipeline`` returns one).

    A type for reading signatures (``pipe: Pipeline``); nothing checks it at runtime.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """

    vae: AutoencoderKL  # pictures <-> latents (notebook 01)
    tokenizer: CLIPTokenizer  # prompt -> 77 token ids (notebook 02)
    text_encoder: CLIPTextModel  # token ids -> (B, 77, D) embeddings (notebook 02)
    unet: UNet2DConditionModel  # predicts the noise (notebook 03)
    scheduler: SchedulerMixin  # timesteps and the step rule (notebooks 04-05)
    vae_scale_factor: int  # pixels per latent cell along a side: 8
    image_processor: VaeImageProcessor  # PIL <-> (B, 3, H, W) tensors in [-1, 1]
    components: dict[str, Any]  # the parts by name, to build another pipeline over them

    @property
    def _execution_device(self) -> torch.device:
        """Where the models compute (the GPU even when CPU offloading parks them on the CPU)."""

    def encode_prompt(self, prompt: str | Sequence[str], device: torch.device, num_images_per_prompt: int,
                      do_classifier_free_guidance: bool, negative_prompt: str | Sequence[str] | None = None,
                      **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(cond, uncond) text embeddings; uncond is None without guidance."""

    def maybe_free_model_hooks(self) -> None:
        """Offload the models again after a call (a no-op unless CPU offloading is on)."""


TASKS: dict[str, type[DiffusionPipeline]] = {
    "txt2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
    "inpaint": StableDiffusionInpaintPipeline,
    "depth": StableDiffusionDepth2ImgPipeline,
}


@dataclass(frozen=True)
class ModelSource:
    """One entry of ``REGISTRY``: a short name, where the weights come from, what they are, and
    the task (pipeline class) they were published for.

    Introduced in notebooks/00_quick_tour.ipynb.
    """

    name: str
    source: str  # a hub repo id, "builtin:tiny" or "package:<folder>"
    description: str
    base_task: str = "txt2img"  # the pipeline class the weights were published for


REGISTRY: dict[str, ModelSource] = {
    m.name: m
    for m in [
        ModelSource("mini", "package:sd-mini", "sd-mini: a tiny SD trained by this project, offline"),
        ModelSource("mini-inpaint", "package:sd-mini-inpaint",
                    "sd-mini with a 9-channel inpainting UNet (fine-tuned here)", base_task="inpaint"),
        ModelSource("mini-depth", "package:sd-mini-depth",
                    "sd-mini with a 5-channel depth-conditioned UNet (fine-tuned here)", base_task="depth"),
        ModelSource("tiny", "builtin:tiny", "random weights with SD 1.5's interface sizes"),
        ModelSource("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "Stable Diffusion 1.5"),
        ModelSource("sd15-inpaint", "stable-diffusion-v1-5/stable-diffusion-inpainting",
                    "SD 1.5 inpainting (9-channel UNet)", base_task="inpaint"),
        ModelSource("sd2-depth", "sd2-community/stable-diffusion-2-depth",
                    "SD 2 depth-to-image (5-channel UNet)", base_task="depth"),
    ]
}


class ModelUnavailableError(RuntimeError):
    """A model could not be loaded (offline hub, missing folder, unknown name); the message says
    what to use instead.

    Introduced in notebooks/00_quick_tour.ipynb.
    """


def default_model() -> str:
    """``$SDLEARN_MODEL`` if set, else ``"mini"``.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    return os.environ.get("SDLEARN_MODEL", "").strip() or "mini"


def mini_path(variant: str = "") -> Path | None:
    """The bundled sd-mini folder (``variant="depth"``/``"inpaint"``: the fine-tuned UNet's
    folder), or None while it is not shipped.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    p = Path(str(resources.files("sdlearn") / "data" / ("sd-mini" + (f"-{variant}" if variant else ""))))
    return p if (p / ("unet/config.json" if variant else "model_index.json")).exists() else None


# Loaded base pipelines, so that switching task reuses the weights instead of reloading them.
_CACHE: dict[tuple, DiffusionPipeline] = {}


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide diffusers'/transformers' per-component loading bars (noise in every notebook)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    was = dlog.is_progress_bar_enabled(), tlog.is_progress_bar_enabled()
    dlog.disable_progress_bar(), tlog.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            dlog.enable_progress_bar()
        if was[1]:
            tlog.enable_progress_bar()


def _get_base(key: str, base_task: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    cache_key = (key, base_task, str(device), dtype)
    if cache_key not in _CACHE:
        _CACHE[cache_key] = _load_base(key, base_task, device, dtype)
    return _CACHE[cache_key]


def _load_base(key: str, base_task: str, device: torch.device, dtype: torch.dtype) -> DiffusionPipeline:
    cls = TASKS[base_task]
    if key == "builtin:tiny":
        from .architectures import tiny_components, tiny_unet

        if base_task == "depth":  # tiny's txt2img parts plus a UNet taking depth as a 5th channel
            pipe = with_components(_get_base(key, "txt2img", device, dtype), "depth",
                                   unet=tiny_unet(in_channels=5))
        else:
            pipe = cls(**tiny_components(), requires_safety_checker=False)
    elif key.startswith("package:sd-mini-"):  # sd-mini's own parts + a fine-tuned, wider UNet
        from diffusers import UNet2DConditionModel

        variant = key.removeprefix("package:sd-mini-")
        folder = mini_path(variant)
        if folder is None:
            raise ModelUnavailableError(f"sd-mini's {variant} UNet is not bundled in this install.")
        with _quiet_loading():  # shipped in fp16 (half the bytes), loaded as `dtype`
            unet = UNet2DConditionModel.from_pretrained(folder / "unet", dtype=dtype, use_safetensors=True)
        pipe = with_components(_get_base("package:sd-mini", "txt2img", device, dtype), base_task, unet=unet)
    else:
        path = key
        if key.startswith("package:"):
            p = mini_path()
            if p is None:
                raise ModelUnavailableError("sd-mini is not bundled in this install.")
            path = str(p)
        try:
            # safetensors only, no remote code: the hub's pickles never execute here.
            with _quiet_loading():
                pipe = cls.from_pretrained(path, dtype=dtype, use_safetensors=True)
        except Exception as err:  # OSError, hub HTTP/offline errors, ValueError for missing files
            raise ModelUnavailableError(
                f"Could not load {path!r}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}\n"
                "This machine may be offline or have no access to the Hugging Face Hub. "
                'Use the bundled model instead: load_pipeline("mini") (or model="mini", '
                "or set SDLEARN_MODEL=mini), which runs anywhere without a download."
            ) from err
    if key == "builtin:tiny" and dtype != torch.float32:
        pipe = pipe.to(dtype=dtype)  # built in fp32; from_pretrained already used `dtype`
    # Everything is created on the CPU; moving only when needed avoids a no-op `.to()` warning.
    return pipe if device.type == "cpu" else pipe.to(device)


def resolve(name_or_path: str | None) -> tuple[str, str]:
    """(cache key / source, the task its weights are for) for a registry name or a folder.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    name = name_or_path or default_model()
    if name in REGISTRY:
        src = REGISTRY[name]
        if src.source == "package:sd-mini" and mini_path() is None:
            return "builtin:tiny", "txt2img"  # until sd-mini ships, "mini" is an alias of "tiny"
        return src.source, src.base_task
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "model_index.json").exists():
            raise ModelUnavailableError(f"{p} is not a diffusers pipeline folder (no model_index.json).")
        return str(p.resolve()), "txt2img"
    if "/" in name and not name.startswith((".", "/", "~")):
        return name, "txt2img"  # another hub repo id: tried as is
    raise ModelUnavailableError(
        f"Unknown model {name!r}. Known names: {', '.join(REGISTRY)}; or pass a diffusers folder path.")


def is_trained(name_or_path: str | None = None) -> bool:
    """False only for the random-weight ``tiny`` model (and ``mini`` while it aliases ``tiny``).

    Notebooks use it to skip the cells that assert picture content, which needs trained weights.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    return resolve(name_or_path)[0] != "builtin:tiny"


def load_pipeline(name_or_path: str | None = None, task: str | None = None,
                  device: str | torch.device | None = None,
                  dtype: torch.dtype | str | None = None) -> DiffusionPipeline:
    """A diffusers pipeline for ``task`` on model ``name_or_path`` (default: ``default_model()``).

    ``task`` is one of ``txt2img``, ``img2img``, ``inpaint``, ``depth``; by default the model's
    own (``txt2img``, or ``inpaint``/``depth`` for the 9- and 5-channel models, which serve only
    that task). The weights are loaded once per (model, device, dtype); other tasks are built
    from the same components (no reload, no extra memory).

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    key, base_task = resolve(name_or_path)
    task = task or base_task
    if base_task != "txt2img" and task != base_task:
        raise ValueError(f"{name_or_path!r} has a {base_task} UNet ({'9' if base_task == 'inpaint' else '5'} "
                         f"input channels): it serves task={base_task!r} only, not {task!r}")
    dev = pick_device(device)
    dt = pick_dtype(dev, dtype)
    if task == "depth" and base_task != "depth":
        if key != "builtin:tiny":
            raise ModelUnavailableError(
                f"{name_or_path or default_model()!r} has no depth-conditioned UNet; use "
                '"mini-depth" (offline) or "sd2-depth" (hub, GPU), or "tiny" to see the shapes.')
        base_task = "depth"
    return with_components(_get_base(key, base_task, dev, dt), task)


def with_components(pipe: DiffusionPipeline, task: str | None = None, **overrides: object) -> DiffusionPipeline:
    """A new pipeline object for ``task`` (default: ``pipe``'s own class) over ``pipe``'s modules,
    with some replaced: ``with_components(pipe, scheduler=s)`` samples with ``s`` and leaves
    ``pipe`` untouched. Nothing is copied or reloaded.

    Introduced in notebooks/10_explorer.ipynb.
    """
    # (`from_pipe` would do the same but re-casts every module and logs a spurious dtype warning.)
    cls = type(pipe) if task is None else TASKS[task]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in {**pipe.components, **overrides}.items() if k in params}
    for optional in ("safety_checker", "feature_extractor", "depth_estimator"):
        if optional in params and optional not in kwargs:
            kwargs[optional] = None  # e.g. a depth pipeline has no safety checker to pass on
    if "requires_safety_checker" in params:
        kwargs["requires_safety_checker"] = pipe.config.get("requires_safety_checker", True)
    return cls(**kwargs)
