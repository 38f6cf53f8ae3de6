"""DreamBooth: fine-tune the whole UNet on the new pictures, captioned with a rare token.

The captions name the concept with a token the model has (almost) never learnt a meaning for
(rare tokens of the vocabulary in the paper, ``"sks"`` in diffusers' examples), so the fine-tune
binds the new look to it without overwriting a word in use. Fine-tuning every weight on a few pictures also pulls everything else towards them
("language drift": every shape starts to look like the new one). **Prior preservation** fights
that: each step also trains on pictures of the *known* concepts with their usual captions,
weighted by ``prior_weight``, so the model keeps drawing them as before.

Introduced in notebooks/12_personalisation.ipynb.
"""
from __future__ import annotations

from typing import Any

import torch

from ..training import diffusion_loss, fit, noise_scheduler
from . import ConceptData, batch_loss, batch_of


def train_dreambooth(pipe: Any, data: ConceptData, prior: ConceptData | None = None,
                     prior_weight: float = 1.0, steps: int = 200, lr: float = 2e-4, batch: int = 8,
                     seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Fine-tune every weight of ``pipe.unet`` on ``data``; with ``prior``, each step adds
    ``prior_weight`` times the same loss on a batch of ``prior``. Returns ``fit``'s final state
    (its ``log`` has ``loss``, the total, and ``instance``, the new pictures' part).

    Introduced in notebooks/12_personalisation.ipynb.
    """
    if prior is not None and prior_weight <= 0:
        raise ValueError(f"prior_weight must be positive, got {prior_weight}")
    pipe.text_encoder.requires_grad_(False), pipe.vae.requires_grad_(False)
    pipe.unet.requires_grad_(True)
    sched = noise_scheduler()

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        inst, gen = batch_loss(pipe, data, batch, step, seed, sched)
        if prior is None:
            return inst, {"instance": inst.item()}
        px0, pids = batch_of(prior, batch, gen)
        loss = inst + prior_weight * diffusion_loss(pipe.unet, pipe.text_encoder, px0, pids, sched, gen,
                                                    snr_gamma=None)
        return loss, {"instance": inst.item()}

    try:
        return fit(step_fn, [p for p in pipe.unet.parameters()], steps, lr=lr, warmup=min(50, steps // 10),
                   progress=progress, modules={"unet": pipe.unet}, desc="DreamBooth")
    finally:
        pipe.unet.requires_grad_(False).eval()
