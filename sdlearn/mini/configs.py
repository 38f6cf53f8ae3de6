"""sd-mini's sizes: the components the shipped weights fill, and its scheduler.

The classes are SD 1.5's own (built by ``sdlearn.architectures``); only the sizes differ.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import torch
from diffusers import DDIMScheduler
from transformers import CLIPTextModel

from ..architectures import SD15_SCHEDULER, load_tokenizer, text_config, unet_from, vae_from


def mini_scheduler() -> DDIMScheduler:
    """sd-mini's scheduler: DDIM over SD 1.5's exact noise schedule.

    Why not SD 1.5's PNDM? Its fourth-order multistep step is barely stable on sd-mini's guided
    ODE at 25 steps (notebook 05, section 8): in the behaviour benchmark
    (benchmarks/results/behaviour.json, row 8) it gets colour and shape both right 9.1 points less
    often than DDIM-50, where DDIM, Euler, DPM-Solver++, Heun and LMS stay within 5 points, though
    benchmarks/results/schedulers.json has its colour alone right as often as DDIM's within noise
    (78 % against 83 % of 88 prompts at w = 7.5; on the 26,000-step weights, before the
    caption-noise fine-tune, 33 % against 90 %). DDIM stays: deterministic, one UNet call a step.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    return DDIMScheduler.from_config(SD15_SCHEDULER)


# The UNet's levels for each native picture size (px), and how many of the highest-resolution
# ones have no attention. At 128 px the latents are 16x16; self-attention over their 256 places
# would double the cost of a step, so the 16x16 level is ResNets only, as in SDXL (measured on
# one thread: 0.61 s a training step of 64 and 0.35 s for 25 guided UNet steps, against 1.29 s
# and 0.60 s with attention there; see data/stages/sd-mini-v2/README.md).
UNET_LEVELS: dict[int, tuple[tuple[int, ...], int]] = {64: ((64, 128), 0), 128: ((32, 64, 128), 1)}


def mini_components(seed: int = 0, size: int = 64) -> dict:
    """Freshly initialised sd-mini components (the shapes the shipped weights fill).

    ``size``x``size`` pictures -> 4x(size/8)x(size/8) latents; a 2-layer CLIP text encoder of
    width 48 over the full 49,408-token vocabulary; a cross-attention UNet with the levels
    ``UNET_LEVELS[size]`` (at 64 px (64, 128): 4.2 M parameters, as fast per picture as v1's
    (64, 96) measured side by side: 0.80 vs 0.78 s at 25 steps with guidance, one thread, the
    other core busy; at 128 px (32, 64, 128) without attention at 16x16: 4.1 M parameters).
    Sizes were chosen by measurement (seconds per step) under a 40 MB budget for the shipped
    weights (the 64 px stage: 31 MB in fp32; the 128 px stage: 22 MB, UNet and VAE in fp16).
    The VAE is the same at every size (it is convolutional).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    if size not in UNET_LEVELS:
        raise ValueError(f"size must be one of {sorted(UNET_LEVELS)} px, got {size}")
    torch.manual_seed(seed)
    return {
        "vae": vae_from((32, 64, 64, 64), groups=16, sample_size=size),
        "text_encoder": CLIPTextModel(text_config(hidden=48, layers=2, heads=4, mlp=192)),
        "tokenizer": load_tokenizer(),
        "unet": unet_from(UNET_LEVELS[size][0], cross_dim=48, sample_size=size // 8, layers=1, heads=4,
                          plain_levels=UNET_LEVELS[size][1]),
        "scheduler": mini_scheduler(),
    }
