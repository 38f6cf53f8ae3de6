"""Cross-attention maps: which part of the picture listens to which word of the prompt.

In every cross-attention layer of the UNet (the ``attn2`` of each transformer block) each latent
pixel sends a query and every one of the 77 prompt tokens a key; the softmax over tokens,

    P = softmax(Q K^T / sqrt(d))        # (B * heads, h * w, 77); each row sums to 1

says how much of that pixel's update comes from each token. Reshaped to (h, w) per token, that is
a heat map of where the token acts. We read P with a diffusers *attention processor*, the public
hook diffusers itself uses to swap attention implementations: ``CrossAttentionRecorder`` computes
exactly what ``AttnProcessor`` does (``attn.get_attention_scores``, then ``P @ V``) and keeps a
running sum of P averaged over heads. ``capture_cross_attention`` installs it on the ``attn2``
modules only and puts the original processors back on exit, even after an error.

    with capture_cross_attention(pipe.unet) as store:
        image = sample(pipe, prompt)[0]
    maps = token_maps(store, pipe.tokenizer, prompt, size=8)   # {"red": (8, 8), "circle": ...}

Maps are averaged over heads, over layers (each resized to the latent size first) and over the
sampling steps; with classifier-free guidance only the conditional rows are kept.

Introduced in notebooks/09_cross_attention.ipynb.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["CrossAttentionStore", "CrossAttentionRecorder", "cross_attention_names",
           "capture_cross_attention", "token_maps", "mass_share", "show_token_maps", "overlay"]

Size = int | tuple[int, int]


def _hw(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def _grid(n_pixels: int, size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of a layer with ``n_pixels`` latent pixels, for a latent of aspect ``size``."""
    h = max(1, round(math.sqrt(n_pixels * size[0] / size[1])))
    w = n_pixels // h
    if h * w != n_pixels:
        raise ValueError(f"a layer with {n_pixels} pixels does not fit the aspect of {size}")
    return h, w


def _to_latent(maps: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, T, h, w) layer maps resized bilinearly to the latent's (H, W), as every layer is before
    layers are averaged."""
    return maps if tuple(maps.shape[-2:]) == hw else F.interpolate(maps, size=hw, mode="bilinear", align_corners=False)


class CrossAttentionStore:
    """Running sums of cross-attention probabilities, averaged over heads, one entry per layer.

    ``sums[name]`` is (B, h*w, 77): P summed over the calls (sampling steps) so far, ``calls[name]``
    how many. Memory stays constant however many steps run.

    Introduced in notebooks/09_cross_attention.ipynb.
    """

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.calls: dict[str, int] = {}

    def add(self, name: str, probs: torch.Tensor, heads: int) -> None:
        """Add one call's probabilities, ``probs`` (B * heads, h*w, T) as the processor has them."""
        p = probs.detach().float()
        p = p.reshape(-1, heads, *p.shape[1:]).mean(1)  # (B, h*w, T): the heads' average
        if name in self.sums:
            if self.sums[name].shape != p.shape:
                raise ValueError(f"{name}: got {tuple(p.shape)} after {tuple(self.sums[name].shape)}; "
                                 "call store.reset() between runs of different batch or picture size")
            self.sums[name] += p
            self.calls[name] += 1
        else:
            self.sums[name], self.calls[name] = p.clone(), 1

    def reset(self) -> None:
        """Forget everything recorded so far."""
        self.sums.clear()
        self.calls.clear()

    @property
    def steps(self) -> int:
        """UNet evaluations recorded (every cross-attention layer runs once per evaluation)."""
        return max(self.calls.values(), default=0)

    def layer_maps(self, size: Size) -> dict[str, torch.Tensor]:
        """Per layer, the step-averaged maps (B, T, H, W), bilinearly resized to ``size`` (the latent's)."""
        hw = _hw(size)
        out = {}
        for name, s in self.sums.items():
            b, n, t = s.shape
            h, w = _grid(n, hw)
            m = (s / self.calls[name]).reshape(b, h, w, t).permute(0, 3, 1, 2)  # (B, T, h, w)
            out[name] = _to_latent(m, hw)
        return out

    def average(self, size: Size, batch: int | None = None) -> torch.Tensor:
        """The maps averaged over layers (and steps, heads): (rows, T, H, W) on the CPU.

        With ``batch`` = the number of prompts B, only the conditional rows are returned: the last
        B of the 2B rows a guided UNet call has (``[uncond; cond]``), or all B without guidance.
        """
        if not self.sums:
            raise ValueError("nothing recorded: run the UNet inside capture_cross_attention(...)")
        maps = torch.stack(list(self.layer_maps(size).values())).mean(0).cpu()
        if batch is not None:
            if maps.shape[0] not in (batch, 2 * batch):
                raise ValueError(f"{maps.shape[0]} rows recorded: not {batch} prompts with or without guidance")
            maps = maps[-batch:]
        return maps

    def perfect_map(self, mask: Any, size: Size) -> np.ndarray:
        """The (H, W) map of a token that attends to ``mask`` and nothing else, seen through the
        recorded layers: in each layer every cell gets the share of the mask that falls in it, and
        the layers are resized and averaged as ``average`` does. ``mask`` is a picture-size (h, w)
        array. Its ``mass_share`` on the mask is what a map shaped like the object scores at these
        layers' resolutions, each layer given the same mass: a small object shares its coarse cells
        with the background around it. (All of the mass in one well-placed cell scores more; that
        bound is ``benchmarks/behaviour.py``'s ``best_cell_share``.)

        Introduced in notebooks/09_cross_attention.ipynb.
        """
        if not self.sums:
            raise ValueError("nothing recorded: run the UNet inside capture_cross_attention(...)")
        hw = _hw(size)
        m = torch.as_tensor(np.asarray(mask, np.float32))[None, None]
        if m.sum() <= 0:
            raise ValueError("the mask is empty")
        maps = []
        for name, s in self.sums.items():
            h, w = _grid(s.shape[1], hw)
            cell = F.adaptive_avg_pool2d(m, (h, w))  # (1, 1, h, w): the mask's cover of each cell
            cell = cell / cell.sum()  # the same mass in every layer
            maps.append(_to_latent(cell, hw))
        return torch.cat(maps).mean(0)[0].numpy()


class CrossAttentionRecorder:
    """An attention processor: diffusers' ``AttnProcessor`` math, plus recording P into a store.

    The output is the default processor's (``AttnProcessor2_0`` computes the same softmax
    attention in one fused call, so results agree to float rounding).

    Introduced in notebooks/09_cross_attention.ipynb.
    """

    def __init__(self, store: CrossAttentionStore, name: str) -> None:
        self.store, self.name = store, name

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (hidden_states.shape if encoder_hidden_states is None
                                          else encoder_hidden_states.shape)
        attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)  # Q from the latent pixels
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.head_to_batch_dim(attn.to_k(encoder_hidden_states))  # K, V from the tokens
        value = attn.head_to_batch_dim(attn.to_v(encoder_hidden_states))
        query = attn.head_to_batch_dim(query)  # (B * heads, h*w, d)
        probs = attn.get_attention_scores(query, key, attention_mask)  # (B * heads, h*w, T)
        self.store.add(self.name, probs, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))  # linear, dropout
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_names(unet: Any) -> list[str]:
    """The ``attn_processors`` keys of the cross-attention modules (``...attn2.processor``).

    Introduced in notebooks/09_cross_attention.ipynb.
    """
    names = []
    for key in unet.attn_processors:
        module = unet.get_submodule(key.removesuffix(".processor"))
        if getattr(module, "is_cross_attention", key.endswith("attn2.processor")):
            names.append(key)
    return names


@contextmanager
def capture_cross_attention(unet: Any, store: CrossAttentionStore | None = None
                            ) -> Iterator[CrossAttentionStore]:
    """Record cross-attention inside the ``with`` block; the original processors come back after.

    Only the cross-attention modules get a ``CrossAttentionRecorder``; self-attention keeps its
    processor object. Yields the store (a new one unless ``store`` is given).

    Introduced in notebooks/09_cross_attention.ipynb.
    """
    original = unet.attn_processors  # a fresh dict {name: processor object}
    store = CrossAttentionStore() if store is None else store
    cross = set(cross_attention_names(unet))
    unet.set_attn_processor({k: CrossAttentionRecorder(store, k) if k in cross else p
                             for k, p in original.items()})
    try:
        yield store
    finally:
        unet.set_attn_processor(dict(original))  # set_attn_processor consumes the dict it gets


def token_maps(store: CrossAttentionStore, tokenizer: Any, prompt: str | Sequence[str], size: Size,
               index: int = 0, special: bool = False) -> dict[str, np.ndarray]:
    """{token: (H, W) map} for the prompt's tokens, in order, from the conditional rows.

    ``prompt`` is what was sampled (a string, or the list of B prompts: then ``index`` picks one).
    Values are attention probabilities (over all 77 tokens they sum to 1 at every pixel). Repeated
    tokens get a suffix ("a", "a#2"); ``special=True`` adds the start token ``<|startoftext|>``,
    and ``<|endoftext|>`` for the first end/padding position.

    Introduced in notebooks/09_cross_attention.ipynb.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    maps = store.average(size, batch=len(prompts))[index].numpy()  # (T, H, W)
    ids = tokenizer(prompts[index], padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True).input_ids
    eos = ids.index(tokenizer.eos_token_id, 1) if tokenizer.eos_token_id in ids[1:] else len(ids)
    positions = ([0] if special else []) + list(range(1, eos)) + ([eos] if special and eos < len(ids) else [])
    out: dict[str, np.ndarray] = {}
    for pos in positions:
        word = tokenizer.convert_ids_to_tokens(ids[pos]).replace("</w>", "")
        key, k = word, 1
        while key in out:
            k += 1
            key = f"{word}#{k}"
        out[key] = maps[pos]
    return out


def mass_share(amap: np.ndarray, region: np.ndarray) -> float:
    """The share of a token map's mass that lies on ``region`` (a boolean picture-size mask), the
    map upsampled bilinearly to the picture as ``overlay`` draws it.

    Introduced in notebooks/09_cross_attention.ipynb.
    """
    region = np.asarray(region, bool)
    if not region.any():
        raise ValueError("the region is empty")
    up = _upsampled(amap, *region.shape)
    return float(up[region].sum() / up.sum())


def _upsampled(amap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A token map upsampled bilinearly to (height, width): how every map here meets the picture."""
    m = torch.from_numpy(np.asarray(amap, np.float32))[None, None]
    return F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False)[0, 0].numpy()


def _stretched(amap: np.ndarray, height: int, width: int) -> np.ndarray:
    """A token map upsampled bilinearly to (height, width) and stretched to [0, 1] (min -> 0)."""
    up = _upsampled(amap, height, width)
    lo, hi = float(up.min()), float(up.max())
    return (up - lo) / max(hi - lo, 1e-12)


def show_token_maps(image: Any, maps: dict[str, np.ndarray], tokens: Sequence[str] | None = None,
                    axes: Any = None, alpha: float = 0.6, title: str | None = None) -> Any:
    """The picture, then each token's map upsampled to the picture and laid over it, each map
    stretched to its own range (min -> blue, max -> red): compare *where*, not how much; the
    values themselves are in ``maps``. Returns the axes.

    Introduced in notebooks/09_cross_attention.ipynb.
    """
    import matplotlib.pyplot as plt

    from .plotting import to_pil

    img = to_pil(image)
    tokens = list(maps) if tokens is None else list(tokens)
    if axes is None:
        _, axes = plt.subplots(1, len(tokens) + 1, figsize=(1.4 * (len(tokens) + 1), 1.8))
    axes = np.atleast_1d(axes)
    axes[0].imshow(img)
    axes[0].set_title(title or "picture", fontsize=8)
    for ax, tok in zip(axes[1:], tokens):
        ax.imshow(img.convert("L"), cmap="gray")
        ax.imshow(_stretched(maps[tok], img.height, img.width), cmap="jet", alpha=alpha, vmin=0, vmax=1)
        ax.set_title(tok, fontsize=8)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return axes


def overlay(image: Any, amap: np.ndarray, alpha: float = 0.6) -> Any:
    """One token's map laid over the picture as a ``PIL.Image`` (no matplotlib figure: fast
    enough for a widget): the map upsampled bilinearly, stretched to its own range and coloured
    with the ``jet`` colour map (min blue, max red) over the picture in grey.

    Introduced in notebooks/10_explorer.ipynb.
    """
    from matplotlib import colormaps
    from PIL import Image

    from .plotting import to_pil

    img = to_pil(image)
    heat = colormaps["jet"](_stretched(amap, img.height, img.width))[..., :3]  # (H, W, 3) in [0, 1]
    grey = np.asarray(img.convert("L"), np.float32)[..., None] / 255.0
    mixed = (1 - alpha) * grey + alpha * heat
    return Image.fromarray((mixed * 255).round().astype(np.uint8))
