"""Textual inversion: a new word whose embedding is learnt; the networks stay frozen.

The tokenizer gets one new token (``"<heart>"``); the text encoder's embedding table one new row,
initialised from a related word. Training updates only that row: a gradient mask zeroes every
other row's gradient, and with AdamW's weight decay at 0 a zero gradient is a zero update, so
every other weight of the pipeline stays bit-for-bit the same. The result is one vector of the
text encoder's width, saved in the format ``pipe.load_textual_inversion`` reads.

Introduced in notebooks/12_personalisation.ipynb.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..training import fit, noise_scheduler
from . import ConceptData, batch_loss

WEIGHT_NAME = "learned_embeds.safetensors"  # the file name diffusers' loader looks for


def add_concept_token(pipe: Any, token: str, init_word: str) -> int:
    """Add ``token`` to the tokenizer and a row to the embedding table, a copy of ``init_word``'s
    embedding (a good start: "shape" for a new shape). Returns the token's id.

    Introduced in notebooks/12_personalisation.ipynb.
    """
    init = pipe.tokenizer.encode(init_word, add_special_tokens=False)
    if len(init) != 1:
        raise ValueError(f"init_word must be one token, {init_word!r} is {len(init)}")
    # An ordinary word (one token already) would be hijacked: "red" as a new token would turn
    # every "red" in every prompt into the concept.
    if token in pipe.tokenizer.get_vocab() or len(pipe.tokenizer.encode(token, add_special_tokens=False)) == 1:
        raise ValueError(f"{token!r} is already a token: pick a new one, e.g. '<{token.strip('<>')}>'")
    pipe.tokenizer.add_tokens(token)
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    pipe.text_encoder.resize_token_embeddings(len(pipe.tokenizer), mean_resizing=False)  # row set below
    emb = pipe.text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        emb[token_id] = emb[init[0]]
    return token_id


def train_textual_inversion(pipe: Any, data: ConceptData, token_id: int, steps: int = 300,
                            lr: float = 5e-3, batch: int = 8, seed: int = 0,
                            progress: bool = True) -> dict[str, Any]:
    """Learn the embedding row ``token_id`` on ``data`` (captions containing the token).
    Returns ``fit``'s final state (its ``log`` holds the losses).

    Introduced in notebooks/12_personalisation.ipynb.
    """
    if not (data.input_ids == token_id).any(dim=1).all():
        raise ValueError("every training caption must contain the new token")
    pipe.unet.requires_grad_(False), pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    weight = pipe.text_encoder.get_input_embeddings().weight
    weight.requires_grad_(True)
    keep = torch.zeros(weight.shape[0], 1)
    keep[token_id] = 1.0
    hook = weight.register_hook(lambda g: g * keep)  # every other row: a zero gradient
    sched = noise_scheduler()

    def step_fn(step: int) -> torch.Tensor:
        return batch_loss(pipe, data, batch, step, seed, sched)[0]

    try:
        state = fit(step_fn, [weight], steps, lr=lr, warmup=min(50, steps // 10), progress=progress,
                    desc="textual inversion")
    finally:
        hook.remove()
        weight.requires_grad_(False)
        pipe.text_encoder.eval(), pipe.unet.eval()
    return state


def save_textual_inversion(pipe: Any, token: str, folder: str | Path) -> Path:
    """Write ``{token: embedding}`` to ``folder/learned_embeds.safetensors`` (diffusers' format).

    Introduced in notebooks/12_personalisation.ipynb.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token_id = pipe.tokenizer.convert_tokens_to_ids(token)
    vec = pipe.text_encoder.get_input_embeddings().weight[token_id].detach().clone()
    save_file({token: vec}, folder / WEIGHT_NAME)
    return folder / WEIGHT_NAME
