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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import SchedulerMixin

    from .models import Pipeline

__all__ = ["SchedulerSpec", "SCHEDULERS", "make_scheduler", "available_schedulers", "noise_schedule",
           "describe", "ADAMS_BASHFORTH", "stability_limit", "jacobian_radius", "guided_stiffness"]


@dataclass(frozen=True)
class SchedulerSpec:
    """One row of ``SCHEDULERS``: the diffusers class (by name), the config values that make
    it the named sampler (DPM-Solver++ is ``DPMSolverMultistepScheduler`` with
    ``algorithm_type="dpmsolver++"``), and the extra package its ``step`` needs, if any.

    Introduced in notebooks/05_schedulers.ipynb.
    """

    cls: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    needs: str | None = None


# The course's samplers by short name.
SCHEDULERS: dict[str, SchedulerSpec] = {
    "ddim": SchedulerSpec("DDIMScheduler"),
    "pndm": SchedulerSpec("PNDMScheduler"),  # SD 1.5's default (PLMS)
    "euler": SchedulerSpec("EulerDiscreteScheduler"),
    "euler_a": SchedulerSpec("EulerAncestralDiscreteScheduler"),  # stochastic: fresh noise per step
    "dpm++": SchedulerSpec("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "lms": SchedulerSpec("LMSDiscreteScheduler", needs="scipy"),  # integrates its coefficients with scipy
    "heun": SchedulerSpec("HeunDiscreteScheduler"),  # 2nd order: two UNet calls per step
    "unipc": SchedulerSpec("UniPCMultistepScheduler"),
}


def _config(pipe_or_scheduler: Pipeline | SchedulerMixin) -> Any:
    return getattr(pipe_or_scheduler, "scheduler", pipe_or_scheduler).config


def make_scheduler(pipe: Pipeline | SchedulerMixin, name: str, **overrides: Any) -> SchedulerMixin:
    """A new scheduler ``name`` (see ``SCHEDULERS``) built from ``pipe``'s scheduler config.

    It is ``Class.from_config(pipe.scheduler.config, **defaults, **overrides)``: the model's
    betas and training settings carry over, the sampling rule changes. ``clip_sample`` is set
    to False where the config leaves it out (x0 clipping is for pixels, not latents). ``pipe`` may also be a
    scheduler. Raises ``ValueError`` for an unknown name, a class the pipeline's scheduler does
    not list in ``compatibles``, or a missing extra package (LMS needs scipy).

    Introduced in notebooks/05_schedulers.ipynb.
    """
    import diffusers

    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULERS)}")
    spec = SCHEDULERS[name]
    cls = getattr(diffusers, spec.cls)
    current = getattr(pipe, "scheduler", pipe)
    compatible = {c.__name__ for c in current.compatibles} | {type(current).__name__}
    if cls.__name__ not in compatible:
        raise ValueError(f"{cls.__name__} is not compatible with {type(current).__name__}")
    if spec.needs is not None and importlib.util.find_spec(spec.needs) is None:
        raise ValueError(f"the {name!r} scheduler needs the {spec.needs!r} package: pip install {spec.needs}")
    defaults = dict(spec.overrides)
    if "clip_sample" in inspect.signature(cls.__init__).parameters and "clip_sample" not in current.config:
        # DDIM/DDPM clip x0 to [-1, 1] by default, right for pixels but wrong for SD's latents
        # (diffusers itself warns); SD 1.5's config says clip_sample: false, so do the same.
        defaults["clip_sample"] = False
    return cls.from_config(current.config, **{**defaults, **overrides})


def available_schedulers(pipe: Pipeline | SchedulerMixin) -> list[str]:
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


def noise_schedule(pipe: Pipeline | SchedulerMixin) -> dict[str, np.ndarray]:
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


# ----------------------------------------------------------------------------- why multistep solvers break
# Adams-Bashforth of order k: x_{n+1} = x_n + h * sum_j b_j f(x_{n-j}), newest first. PNDM's PLMS
# steps (diffusers' PNDMScheduler.step_plms) combine its last four noise predictions with exactly
# the order-4 row and feed the result to DDIM's update; its first steps use the lower orders.
ADAMS_BASHFORTH: dict[int, tuple[float, ...]] = {
    1: (1.0,),  # Euler: DDIM itself
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


def stability_limit(order: int) -> float:
    """The largest z = h * lambda at which Adams-Bashforth of ``order`` stays stable on the test
    equation x' = -lambda x (lambda > 0): its steps x_{n+1} = x_n - z * sum_j b_j x_{n-j} do not
    grow. 2 for Euler, then 1, 6/11 and 3/10 for orders 2-4: the higher the order, the shorter
    the step it tolerates. Bisection on the roots of the characteristic polynomial
    zeta^k - zeta^(k-1) + z * sum_j b_j zeta^(k-1-j).

    Introduced in notebooks/05_schedulers.ipynb.
    """
    if order not in ADAMS_BASHFORTH:
        raise ValueError(f"order must be one of {sorted(ADAMS_BASHFORTH)}, got {order!r}")
    b = np.asarray(ADAMS_BASHFORTH[order])

    def stable(z: float) -> bool:
        poly = np.zeros(order + 1)
        poly[:2] = 1.0, -1.0
        poly[1:] += z * b
        return bool(np.abs(np.roots(poly)).max() <= 1 + 1e-9)

    lo, hi = 0.0, 4.0  # stable just above 0, unstable at 4 for every order
    for _ in range(60):
        lo, hi = ((lo + hi) / 2, hi) if stable((lo + hi) / 2) else (lo, (lo + hi) / 2)
    return lo


def jacobian_radius(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, iters: int = 8,
                    delta: float = 1e-2, generator: torch.Generator | None = None) -> torch.Tensor:
    """The dominant eigenvalue of d fn / d x at ``x``, per sample (B,), by power iteration: push a
    random direction v through the Jacobian ``iters`` times, J v ~ (fn(x + delta v) - fn(x)) / delta,
    normalising each time. Its sign is that of v . J v (positive: the dynamics contract there).
    ``fn`` maps (B, ...) to (B, ...) sample by sample.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    if iters < 1 or delta <= 0:
        raise ValueError(f"need iters >= 1 and delta > 0, got {iters}, {delta}")
    shape = (-1,) + (1,) * (x.dim() - 1)
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    v = v / v.flatten(1).norm(dim=1).view(shape)
    f0 = fn(x)
    for _ in range(iters):
        jv = (fn(x + delta * v) - f0) / delta
        norm = jv.flatten(1).norm(dim=1)
        sign = torch.sign((jv * v).flatten(1).sum(dim=1))
        v = jv / norm.clamp_min(1e-12).view(shape)
    return sign * norm


def guided_stiffness(pipe: Pipeline, prompt_embeds: torch.Tensor, latents: torch.Tensor, guidance_scale: float,
                     num_inference_steps: int = 25, iters: int = 8, seed: int = 0) -> list[dict]:
    """How stiff the guided ODE is along DDIM's own run from ``latents`` (B, 4, H/8, W/8).

    DDIM's step is Euler's on x_bar = x / sqrt(abar) against sigma_bar = sqrt((1 - abar) / abar):
    x_bar -= h * eps~, h the step in sigma_bar. Near the path eps~ acts like lambda * x_bar with
    lambda = sqrt(abar_t) * rho_t, rho_t the dominant eigenvalue of d eps~ / d x_t, where
    eps~ = eps_u + w (eps_c - eps_u); so each step has z = h * sqrt(abar_t) * rho_t, to compare with
    ``stability_limit``. ``prompt_embeds``: [uncond; cond] (2B, 77, D), as ``encode_text`` gives
    them with guidance on (w = 1 then measures the prompt alone). One row per step: ``i``, ``t``,
    ``h``, ``rho`` and ``z`` (means over the batch).

    Introduced in notebooks/05_schedulers.ipynb.
    """
    if prompt_embeds.shape[0] != 2 * latents.shape[0]:
        raise ValueError(f"prompt_embeds must stack [uncond; cond] for the {latents.shape[0]} latents "
                         f"(got {prompt_embeds.shape[0]} rows): encode_text(..., guidance_scale > 1)")
    ddim = make_scheduler(pipe, "ddim")
    ddim.set_timesteps(num_inference_steps)
    acp, ts = ddim.alphas_cumprod, [int(t) for t in ddim.timesteps]
    gen = torch.Generator().manual_seed(seed)

    def guided(x: torch.Tensor, t: int) -> torch.Tensor:  # DDIM's model input is x_t itself
        uncond, cond = pipe.unet(torch.cat([x, x]), t, encoder_hidden_states=prompt_embeds).sample.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    rows, x = [], latents
    with torch.no_grad():
        for i, t in enumerate(ts):
            a = acp[t]
            a_prev = acp[ts[i + 1]] if i + 1 < len(ts) else ddim.final_alpha_cumprod
            h = float(((1 - a) / a).sqrt() - ((1 - a_prev) / a_prev).sqrt())
            rho = float(jacobian_radius(lambda y: guided(y, t), x, iters, generator=gen).mean())
            rows.append({"i": i, "t": t, "h": h, "rho": rho, "z": h * float(a.sqrt()) * rho})
            x = ddim.step(guided(x, t), t, x, return_dict=False)[0]
    return rows
