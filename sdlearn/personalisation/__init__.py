"""Teach a Stable Diffusion pipeline a new concept from a handful of pictures, three ways.

=====================  =========================================  ===============================
method                 what is trained (everything else frozen)   file diffusers loads
=====================  =========================================  ===============================
textual inversion      one new row of the token-embedding table   ``learned_embeds.safetensors``
                       (Gal et al. 2022)                           (``pipe.load_textual_inversion``)
LoRA                   low-rank adapters on the UNet's attention  ``pytorch_lora_weights.safetensors``
                       projections (Hu et al. 2021; ``peft``)     (``pipe.load_lora_weights``)
DreamBooth             the whole UNet, on a rare-token caption,   a UNet folder
                       optionally with prior preservation          (``UNet2DConditionModel``)
                       (Ruiz et al. 2022)
=====================  =========================================  ===============================

Each method is a ``step_fn`` on the training core (``sdlearn.training.fit``) with SD's own loss
(``diffusion_loss``, plain noise MSE), on latents encoded once by ``concept_data``. Nothing here
knows about sd-mini: the same calls work on SD 1.5 (see notebook 12's cost table).

Introduced in notebooks/12_personalisation.ipynb.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..latents import encode
from ..text import tokenize
from ..training import diffusion_loss, noise_scheduler

__all__ = ["private_copy", "ConceptData", "concept_data", "batch_of", "batch_loss", "concept_loss",
           "trainable_parameters"]


def private_copy(pipe: Any) -> Any:
    """A pipeline of the same class over its own copies of the tokenizer, text encoder and UNet
    (the parts a method changes); the VAE and scheduler stay shared. ``load_pipeline`` hands out
    pipelines that share one set of modules, so without this, teaching one of them a concept
    would change every other pipeline of the session too — the base model included.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    import copy

    from ..models import with_components

    return with_components(pipe, tokenizer=copy.deepcopy(pipe.tokenizer),
                           text_encoder=copy.deepcopy(pipe.text_encoder), unet=copy.deepcopy(pipe.unet))


@dataclass
class ConceptData:
    """Pictures of a concept as the UNet trains on them: scaled latents ``(N, 4, h, w)`` and
    the token ids ``(N, 77)`` of their captions.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    latents: torch.Tensor
    input_ids: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return len(self.captions)


@torch.no_grad()
def concept_data(pipe: Any, images: Sequence[np.ndarray], captions: Sequence[str]) -> ConceptData:
    """Encode ``images`` (uint8 H x W x 3, the pipeline's native size) once with the pipeline's
    VAE (the latent mean times ``scaling_factor``, as the pipeline decodes) and tokenize
    ``captions``. Call it after adding any new token, so the ids include it.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    if len(images) != len(captions) or not len(images):
        raise ValueError(f"need as many captions as images (and at least one): {len(images)} vs {len(captions)}")
    sizes = {np.asarray(im).shape for im in images}
    if len(sizes) != 1 or len(next(iter(sizes))) != 3 or next(iter(sizes))[2] != 3:
        raise ValueError(f"images must share one (H, W, 3) shape, got {sorted(sizes)}")
    x = torch.from_numpy(np.stack([np.asarray(im, np.uint8) for im in images])).permute(0, 3, 1, 2)
    latents = encode(pipe.vae, x.float() / 127.5 - 1)  # (N, 4, H/8, W/8), the latent mean, scaled
    return ConceptData(latents, tokenize(pipe.tokenizer, list(captions)), list(captions))


def batch_of(data: ConceptData, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch ``(latents, ids)`` of ``data``, drawn with ``gen`` (with replacement).

    Introduced in notebooks/12_personalisation.ipynb.
    """
    idx = torch.randint(0, len(data), (batch,), generator=gen)
    return data.latents[idx], data.input_ids[idx]


def batch_loss(pipe: Any, data: ConceptData, batch: int, step: int, seed: int,
               sched: Any) -> tuple[torch.Tensor, torch.Generator]:
    """SD's loss (plain noise MSE) on a batch of ``data`` for training step ``step``: the batch,
    timesteps and noise all come from one generator seeded by ``(seed, step)``, so a run is
    reproducible and resumable. Returns the loss and that generator, for further draws.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    x0, ids = batch_of(data, batch, gen)
    return diffusion_loss(pipe.unet, pipe.text_encoder, x0, ids, sched, gen, snr_gamma=None), gen


@torch.no_grad()
def concept_loss(pipe: Any, data: ConceptData, repeats: int = 8, seed: int = 0) -> float:
    """SD's training loss on ``data``, each picture ``repeats`` times, with fixed noise and
    timesteps (a fixed generator): the same draw before and after training, so the two losses
    compare like for like, unlike the noisy per-step losses of the log.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    gen = torch.Generator().manual_seed(seed)
    x0, ids = data.latents.repeat(repeats, 1, 1, 1), data.input_ids.repeat(repeats, 1)
    return float(diffusion_loss(pipe.unet, pipe.text_encoder, x0, ids, noise_scheduler(), gen, snr_gamma=None))


def trainable_parameters(params: Sequence[torch.Tensor], rows: int | None = None) -> int:
    """How many numbers a method trains: all elements of ``params``, or, for an embedding table
    of which only ``rows`` rows may change, ``rows`` times its width.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    if rows is not None:
        return rows * params[0].shape[1]
    return sum(p.numel() for p in params)
