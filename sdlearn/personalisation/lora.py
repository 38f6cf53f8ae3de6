"""LoRA: small low-rank adapters beside the UNet's attention projections, trained with ``peft``.

Each adapted projection ``W`` (``to_q``, ``to_k``, ``to_v``, ``to_out.0`` of every attention
layer) becomes ``W x + (alpha / r) * B A x`` with ``A`` (r x d_in) random and ``B`` (d_out x r)
zero at the start, so the adapted UNet starts out exactly as the base one. Only ``A`` and ``B``
train. diffusers saves them as one small file that ``pipe.load_lora_weights`` adds to any
pipeline with the same UNet, at a strength set by ``pipe.set_adapters(name, weight)``.

Introduced in notebooks/12_personalisation.ipynb.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..training import fit, noise_scheduler
from . import ConceptData, batch_loss

TARGETS = ("to_q", "to_k", "to_v", "to_out.0")  # the attention projections, as diffusers' examples


def add_lora(unet: Any, rank: int = 4, alpha: float | None = None, seed: int = 0) -> list[torch.Tensor]:
    """Add a LoRA adapter of ``rank`` (``alpha`` defaults to ``rank``, a scale of 1) to every
    attention projection of ``unet``; freezes the rest. Returns the adapter's parameters.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    unet.requires_grad_(False)
    torch.manual_seed(seed)  # A's random start
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights="gaussian",
                                target_modules=list(TARGETS)))
    return [p for p in unet.parameters() if p.requires_grad]


def train_lora(pipe: Any, data: ConceptData, params: list[torch.Tensor], steps: int = 300, lr: float = 1e-3,
               batch: int = 8, seed: int = 0, progress: bool = True) -> dict[str, Any]:
    """Train the adapter ``params`` (from ``add_lora``) on ``data``. Returns ``fit``'s final state.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    pipe.text_encoder.requires_grad_(False), pipe.vae.requires_grad_(False)
    sched = noise_scheduler()

    def step_fn(step: int) -> torch.Tensor:
        return batch_loss(pipe, data, batch, step, seed, sched)[0]

    try:
        return fit(step_fn, params, steps, lr=lr, warmup=min(50, steps // 10), progress=progress,
                   modules={"unet": pipe.unet}, desc="LoRA")
    finally:
        pipe.unet.eval()


def save_lora(pipe: Any, folder: str | Path) -> Path:
    """Write the UNet's adapter in diffusers' LoRA format (``pytorch_lora_weights.safetensors``).

    Introduced in notebooks/12_personalisation.ipynb.
    """
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    folder = Path(folder)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(pipe.unet))
    type(pipe).save_lora_weights(folder, unet_lora_layers=layers, safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"
