"""Noise schedules, and swapping the sampler of a pipeline by a short name.

A scheduler is two things: the *training* noise schedule (beta_t, hence alpha-bar_t and sigma_t,
fixed by the model's ``scheduler_config.json``), and a *sampling* rule that walks from x_T to x_0
in N steps. Every scheduler in ``pipe.scheduler.compatibles`` reads the same schedule, so any of
them can be built from the pipeline's config::

    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.scheduler = make_scheduler(pipe, "euler")          # the same, by name

Introduced in notebooks/05_schedulers.ipynb.
"""
from __future__ import annotations

import importlib.util
import inspect
from typing import Any

import numpy as np
import torch

__all__ = ["SCHEDULERS", "make_scheduler", "available_schedulers", "noise_schedule",
           "describe", "steps_vs_quality"]

# short name -> (diffusers class, config overrides, extra package its step() needs)
SCHEDULERS: dict[str, tuple[str, dict, str | None]] = {
    "ddim": ("DDIMScheduler", {}, None),
    "pndm": ("PNDMScheduler", {}, None),  # SD 1.5's default (PLMS)
    "euler": ("EulerDiscreteScheduler", {}, None),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, None),  # stochastic: fresh noise per step
    "dpm++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, None),
    "lms": ("LMSDiscreteScheduler", {}, "scipy"),  # integrates its coefficients with scipy
    "heun": ("HeunDiscreteScheduler", {}, None),  # 2nd order: two UNet calls per step
    "unipc": ("UniPCMultistepScheduler", {}, None),
}


def _class(name: str) -> type:
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    return getattr(diffusers, SCHEDULERS[name][0])


def _config(pipe_or_scheduler: Any) -> Any:
    return getattr(pipe_or_scheduler, "scheduler", pipe_or_scheduler).config


def make_scheduler(pipe: Any, name: str, **overrides: Any) -> Any:
    """A new scheduler ``name`` (see ``SCHEDULERS``) built from ``pipe``'s scheduler config.

    It is ``Class.from_config(pipe.scheduler.config, **defaults, **overrides)``: the model's
    betas and training settings carry over, the sampling rule changes. ``clip_sample`` is set
    to False where the config leaves it out (x0 clipping is for pixels, not latents). ``pipe`` may also be a
    scheduler. Raises ``ValueError`` for an unknown name, a class the pipeline's scheduler does
    not list in ``compatibles``, or a missing extra package (LMS needs scipy).

    Introduced in notebooks/05_schedulers.ipynb.
    """
    cls = _class(name)
    current = getattr(pipe, "scheduler", pipe)
    compatible = {c.__name__ for c in current.compatibles} | {type(current).__name__}
    if cls.__name__ not in compatible:
        raise ValueError(f"{cls.__name__} is not compatible with {type(current).__name__}")
    extra = SCHEDULERS[name][2]
    if extra is not None and importlib.util.find_spec(extra) is None:
        raise ValueError(f"the {name!r} scheduler needs the {extra!r} package: pip install {extra}")
    defaults = dict(SCHEDULERS[name][1])
    if "clip_sample" in inspect.signature(cls.__init__).parameters and "clip_sample" not in current.config:
        # DDIM/DDPM clip x0 to [-1, 1] by default, right for pixels but wrong for SD's latents
        # (diffusers itself warns); SD 1.5's config says clip_sample: false, so do the same.
        defaults["clip_sample"] = False
    return cls.from_config(current.config, **{**defaults, **overrides})


def available_schedulers(pipe: Any) -> list[str]:
    """The names in ``SCHEDULERS`` that ``make_scheduler`` can build for this pipeline here.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    ok = []
    for name in SCHEDULERS:
        try:
            make_scheduler(pipe, name)
        except ValueError:
            continue
        ok.append(name)
    return ok


def noise_schedule(pipe: Any) -> dict[str, np.ndarray]:
    """The training noise schedule as float64 arrays over t = 0..T-1: ``betas`` (beta_t),
    ``alphas_cumprod`` (alpha-bar_t = prod (1 - beta_s)), ``signal`` (sqrt(alpha-bar_t), the
    share of x_0 left in x_t), ``noise`` (sqrt(1 - alpha-bar_t)) and ``sigmas``
    (sigma_t = sqrt((1 - alpha-bar_t) / alpha-bar_t), the noise-to-signal ratio that
    Euler-type samplers walk down). Recomputed in float64 from the config's betas.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    cfg = _config(pipe)
    n = cfg.num_train_timesteps
    if cfg.get("trained_betas") is not None:
        betas = np.asarray(cfg.trained_betas, np.float64)
    elif cfg.beta_schedule == "linear":
        betas = np.linspace(cfg.beta_start, cfg.beta_end, n, dtype=np.float64)
    elif cfg.beta_schedule == "scaled_linear":  # linear in sqrt(beta): SD's (and LDM's) choice
        betas = np.linspace(cfg.beta_start ** 0.5, cfg.beta_end ** 0.5, n, dtype=np.float64) ** 2
    else:
        raise ValueError(f"noise_schedule does not know beta_schedule {cfg.beta_schedule!r}")
    acp = np.cumprod(1.0 - betas)
    return {"t": np.arange(n), "betas": betas, "alphas_cumprod": acp, "signal": np.sqrt(acp),
            "noise": np.sqrt(1.0 - acp), "sigmas": np.sqrt((1.0 - acp) / acp)}


def _is_stochastic(scheduler: Any) -> bool:
    """Does ``step`` draw fresh noise? Tried on a copy: two generators, same input."""
    import copy

    outs = []
    for seed in (0, 1):
        s = copy.deepcopy(scheduler)
        s.set_timesteps(4)
        x = torch.ones(1, 4, 2, 2) * float(s.init_noise_sigma)
        t = s.timesteps[0]
        kw = {"generator": torch.Generator().manual_seed(seed)} \
            if "generator" in inspect.signature(s.step).parameters else {}
        outs.append(s.step(torch.zeros_like(x), t, s.scale_model_input(x, t), **kw,
                           return_dict=False)[0])
    return not torch.equal(outs[0], outs[1])


def describe(scheduler: Any, num_inference_steps: int = 25) -> dict:
    """One table row about a scheduler: class, order, UNet calls for N steps, the start noise
    scale ``init_noise_sigma``, whether ``step`` adds fresh noise (then it consumes the
    generator), its timestep spacing and first/last timestep. Sets the scheduler's timesteps.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    stochastic = _is_stochastic(scheduler)
    scheduler.set_timesteps(num_inference_steps)
    return {"class": type(scheduler).__name__, "order": scheduler.order,
            "unet_calls": len(scheduler.timesteps),
            "init_noise_sigma": float(scheduler.init_noise_sigma), "stochastic": stochastic,
            "timestep_spacing": scheduler.config.get("timestep_spacing"),
            "first_t": float(scheduler.timesteps[0]), "last_t": float(scheduler.timesteps[-1])}
