"""The training core: SD's objective, the learning-rate schedule, EMA weights, checkpoints and
one plain training loop.

Every model the course trains runs through here: sd-mini's VAE and UNet
(``sdlearn.mini.recipe``), its depth and inpainting fine-tunes (``sdlearn.mini.variants``), and
the small fine-tunes of notebook 12. What differs between them is one function, ``step_fn(step)``,
that draws the batch of that step and returns its loss; ``fit`` does the rest.

    def step_fn(step):
        gen = torch.Generator().manual_seed(step)       # the batch is a function of the step,
        ...                                              # so a resumed run draws the same ones
        return diffusion_loss(unet, text_encoder, latents, ids, sched, gen)

    state = fit(step_fn, params, steps=1000, lr=1e-4, ema_decay=0.999,
                modules={"unet": unet}, ckpt=Path("unet.pt"))

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DDPMScheduler
from tqdm.auto import tqdm

from .architectures import SD15_SCHEDULER

__all__ = ["noise_scheduler", "diffusion_loss", "lr_at", "ema_decay_at", "ema_update", "copy_ema", "save",
           "resume", "plot_losses", "fit"]

StepResult = torch.Tensor | tuple[torch.Tensor, dict[str, float]]
_RESERVED = ("opt", "ema", "step", "log", "rng")  # checkpoint keys that modules may not take


# ----------------------------------------------------------------------------- the objective
def noise_scheduler() -> DDPMScheduler:
    """The forward process used in training: DDPM over SD 1.5's exact betas (1000 steps, ε target).

    Sampling may use any scheduler over the same betas (sd-mini ships DDIM); training only needs
    ``add_noise`` and ``alphas_cumprod``, which every one of them shares.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    keys = ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps", "prediction_type")
    return DDPMScheduler(**{k: SD15_SCHEDULER[k] for k in keys})


def diffusion_loss(unet: Any, text_encoder: Any, latents: torch.Tensor, input_ids: torch.Tensor,
                   sched: Any, gen: torch.Generator, snr_gamma: float | None = 5.0,
                   extra: torch.Tensor | None = None, noise_offset: float = 0.0,
                   weight: torch.Tensor | None = None) -> torch.Tensor:
    """SD's training objective: predict the noise added at a random timestep.

    With ``snr_gamma`` each timestep's loss is weighted by min(SNR, γ)/SNR ("Min-SNR", Hang et
    al. 2023): low-noise steps, easy and numerous, stop dominating, and training converges
    several times faster. ``snr_gamma=None`` gives SD's plain MSE. ``extra`` channels (a depth
    map, a mask + masked-picture latents) are concatenated to the noisy latents, never noised.

    ``noise_offset`` adds one random constant per sample and channel to the noise ("offset
    noise", diffusers' ``train_text_to_image.py --noise_offset``; Lin et al. 2023,
    arXiv:2305.08891, on why it is needed). SD's schedule leaves a little signal even at
    t = 999, and the *mean* of a latent survives longest: averaged over 16x16 places, the noise's
    own mean is as small as that signal, so a model can read the background's colour from x_t
    instead of from the caption, and at sampling time pure noise then picks the background.

    ``weight`` (B, 1, h, w), if given, weights each latent place's squared error (a spatially
    weighted MSE, e.g. more weight where the objects are); the target is still the noise.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    noise = torch.randn(latents.shape, generator=gen)
    if noise_offset:
        noise = noise + noise_offset * torch.randn((*latents.shape[:2], 1, 1), generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    noisy = sched.add_noise(latents, noise, t)  # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
    cond = text_encoder(input_ids)[0]  # (B, 77, hidden)
    inp = noisy if extra is None else torch.cat([noisy, extra], dim=1)
    pred = unet(inp, t, encoder_hidden_states=cond).sample
    err = (pred - noise).pow(2)
    per_sample = (err if weight is None else err * weight).mean(dim=(1, 2, 3))
    if snr_gamma is not None:
        abar = sched.alphas_cumprod[t]
        snr = abar / (1 - abar)
        per_sample = per_sample * torch.clamp(snr, max=snr_gamma) / snr
    return per_sample.mean()


# ----------------------------------------------------------------------------- schedule and EMA
def lr_at(step: int, total: int, base: float, warmup: int = 200) -> float:
    """The learning rate of ``step`` (0-based) in a run of ``total`` steps peaking at ``base``.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    # 1. Linear warm-up: Adam's moment estimates start empty, and full-size steps on them
    #    would throw freshly initialised weights far off; ramp up over `warmup` steps.
    if step < warmup:
        return base * (step + 1) / warmup
    # 2. Cosine decay from `base`: big steps while the loss falls fast, small ones to settle.
    cosine = 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    # 3. The floor at 5 % of `base`: the last steps still move the weights that the EMA averages;
    #    a learning rate decayed to zero would make them cost time and change nothing.
    return base * (0.05 + 0.95 * cosine)


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay that ``fit`` uses at update ``step`` (0-based): 0 at step 0, then
    ``min(decay, (1 + step) / (10 + step))``, the warm-up of diffusers' ``EMAModel`` (its
    ``get_decay``; it reaches ``decay`` = 0.999 at step 8,990).

    Why a warm-up: with ``decay`` from the first step, the average still holds ``decay**n`` of
    the *random initial* weights after n steps: 13.5 % after 2,000 steps at 0.999, 0.7 % after
    5,000. Measured on a 2,000-step sd-mini UNet trained from scratch: its EMA sampled the asked
    colour in 55 % of 24 held-out single-object prompts, its last weights in 77 %
    (data/stages/sd-mini-v2/README.md, session 17).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    if not 0 <= decay < 1:
        raise ValueError(f"decay must be in [0, 1), got {decay}")
    return 0.0 if step <= 0 else min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def ema_update(ema: Sequence[torch.Tensor], params: Sequence[torch.Tensor], decay: float) -> None:
    """Move each EMA copy towards its parameter: ``e = decay * e + (1 - decay) * p``, in place.

    The EMA is a running average over the last ~1/(1 - decay) steps: it irons out the noise
    of single batches, so the averaged weights sample better than the last ones.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    for e, p in zip(ema, params, strict=True):
        e.lerp_(p.detach(), 1 - decay)  # lerp: e + (1 - decay) * (p - e), the same formula


@torch.no_grad()
def copy_ema(params: Iterable[torch.Tensor], ema: Iterable[torch.Tensor]) -> None:
    """Write the EMA weights into the parameters (what is exported and shipped).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    for p, e in zip(params, ema, strict=True):  # strict: a wrong model must fail, not half-load
        p.copy_(e)


# ----------------------------------------------------------------------------- checkpoints
def save(path: str | Path, **state: Any) -> None:
    """``torch.save`` the keyword arguments as one dict, atomically.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # a rename: an interrupted save never corrupts the last good checkpoint


def resume(path: str | Path) -> dict[str, Any] | None:
    """The dict that ``save`` wrote to ``path``, or None if there is none yet.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    path = Path(path)
    # weights_only=False: the dicts hold optimizer states and logs, and come from our own runs.
    return torch.load(path, weights_only=False) if path.exists() else None


def plot_losses(log: list[dict], key: str = "loss", path: str | Path | None = None, title: str = "") -> Any:
    """A loss curve (raw and smoothed, log scale) as a matplotlib Figure, saved as PNG to ``path``.

    Draws on a bare ``matplotlib.figure.Figure``: no pyplot, so no backend switch that would turn
    off inline plots in a notebook that trains.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    from matplotlib.figure import Figure

    steps = np.array([r["step"] for r in log])
    vals = np.array([r[key] for r in log])
    fig = Figure(figsize=(5, 3), dpi=100)
    ax = fig.add_subplot()
    ax.plot(steps, vals, alpha=0.3, lw=0.8)
    k = max(1, len(vals) // 50)
    if len(vals) > k:
        ax.plot(steps[k - 1 :], np.convolve(vals, np.ones(k) / k, mode="valid"), lw=1.5)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path)
    return fig


# ----------------------------------------------------------------------------- the loop
def fit(step_fn: Callable[[int], StepResult], params: Iterable[torch.Tensor], steps: int, *,
        lr: float, warmup: int = 200, ema_decay: float | None = None,
        modules: dict[str, torch.nn.Module] | None = None, ckpt: str | Path | None = None,
        ckpt_every: int = 250, progress: bool = True, desc: str = "train",
        stop_at: int | None = None) -> dict[str, Any]:
    """Train ``params`` for ``steps`` steps of AdamW; ``step_fn(step)`` returns the step's loss.

    ``step_fn`` may also return ``(loss, {"name": number, ...})`` to log more numbers (the VAE
    logs its PSNR). Each step: the learning rate from ``lr_at(step, steps, lr, warmup)``,
    backward, gradients clipped to norm 1, the optimizer step, the EMA update if ``ema_decay``
    is set (warmed up: ``ema_decay_at(step, ema_decay)``), a log line ``{"step", "loss", ...}``.

    ``modules`` names the networks being trained: they are put in train mode, and with ``ckpt``
    their state_dicts are saved under these names every ``ckpt_every`` steps and at the end,
    beside ``opt``, ``ema``, ``step``, ``log`` and ``rng`` (torch's global random state). If
    ``ckpt`` exists, training resumes from it. ``stop_at`` ends the run after that many steps
    while the schedule still spans ``steps`` (a leg cut short, reproducibly). Returns that final
    state as a dict.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    # Check everything before any compute: a typo should not cost a model build and a first step.
    params, modules = list(params), dict(modules or {})
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise ValueError("params must be a non-empty list of tensors that require grad")
    if ckpt_every <= 0:
        raise ValueError(f"ckpt_every must be positive, got {ckpt_every}")
    if stop_at is not None and not 0 < stop_at <= steps:
        raise ValueError(f"stop_at must be in 1..steps ({steps}), got {stop_at}")
    if ema_decay is not None and not 0 <= ema_decay < 1:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    if ckpt is not None and not modules:
        raise ValueError("ckpt needs modules: a checkpoint without the weights could not resume")
    if clash := [k for k in modules if k in _RESERVED]:
        raise ValueError(f"module names {clash} are taken by the checkpoint's own keys {_RESERVED}")

    # No weight decay by default: AdamW would shrink e.g. the embedding rows no batch ever uses.
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ema = [p.detach().clone() for p in params] if ema_decay is not None else None
    start, log = 0, []

    def state() -> dict[str, Any]:
        out = {name: m.state_dict() for name, m in modules.items()}
        out.update(opt=opt.state_dict(), step=start, log=log, rng=torch.get_rng_state())
        if ema is not None:
            out["ema"] = ema
        return out

    if ckpt is not None and (st := resume(ckpt)) is not None:
        if "opt" not in st:  # e.g. weights loaded from a committed stage: nothing to resume
            raise ValueError(f"{ckpt} holds weights only, no optimizer state, so this run cannot resume "
                             "from it; start a new run in another work folder (the VAE: --init)")
        for name, m in modules.items():
            m.load_state_dict(st[name])
        opt.load_state_dict(st["opt"])
        start, log = st["step"], st["log"]
        if ema is not None:
            ema = st["ema"]
        if "rng" in st:  # e.g. the VAE samples its latents from the global generator
            torch.set_rng_state(st["rng"])
    for m in modules.values():
        m.train()

    end = steps if stop_at is None else stop_at
    bar = tqdm(range(start, end), initial=start, total=steps, desc=desc, mininterval=5, disable=not progress)
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        out = step_fn(step)
        loss, extra = out if isinstance(out, tuple) else (out, {})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        # One unlucky batch (a rare timestep, a photo crop) cannot throw the weights far.
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema_update(ema, params, ema_decay_at(step, ema_decay))
        log.append({"step": step, "loss": loss.item(), **extra})
        start = step + 1  # steps done: what a checkpoint written now resumes from
        if step % 50 == 0:
            bar.set_postfix({k: f"{np.mean([r[k] for r in log[-50:]]):.4g}" for k in log[-1] if k != "step"})
        if ckpt is not None and (start % ckpt_every == 0 or start == end):
            save(ckpt, **state())
    return state()
