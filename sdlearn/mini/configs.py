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
    """sd-mini's scheduler: DDIM over SD 1.5's exact noise schedule (as SD's inpainting release).

    Why not SD 1.5's PNDM? Measured (benchmarks/results/adherence.json): PNDM's 4-step
    linear-multistep extrapolation overshoots on sd-mini at guidance >= 4, because a caption
    explains almost all of a world picture, so the guided noise prediction changes fast between
    steps; DDIM, Euler and DPM-Solver++ don't. Notebook 05 shows it.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    return DDIMScheduler.from_config(SD15_SCHEDULER)


def mini_components(seed: int = 0) -> dict:
    """Freshly initialised sd-mini components (the shapes the shipped weights fill).

    64x64 pictures -> 4x8x8 latents; a 2-layer CLIP text encoder of width 48 over the full
    49,408-token vocabulary; a two-level cross-attention UNet (64, 128): 4.2 M parameters, as
    fast per picture as v1's (64, 96) measured side by side (0.80 vs 0.78 s at 25 steps with
    guidance, one thread, the other core busy). Sizes were chosen by measurement (seconds per
    step) under a 40 MB budget for the shipped weights (v2: 31 MB).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    torch.manual_seed(seed)
    return {
        "vae": vae_from((32, 64, 64, 64), groups=16, sample_size=64),
        "text_encoder": CLIPTextModel(text_config(hidden=48, layers=2, heads=4, mlp=192)),
        "tokenizer": load_tokenizer(),
        "unet": unet_from((64, 128), cross_dim=48, sample_size=8, layers=1, heads=4),
        "scheduler": mini_scheduler(),
    }
