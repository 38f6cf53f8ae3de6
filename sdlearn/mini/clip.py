"""A mini CLIP: sd-mini's text encoder pretrained contrastively on world pictures and captions.

SD 1.5 never trained its text encoder: it took CLIP ViT-L/14's, trained contrastively on
image-caption pairs (Radford et al. 2021, arXiv:2103.00020), and kept it frozen while its UNet
learnt ("a fixed, pretrained text encoder (CLIP ViT-L/14)", SD 1.5's model card on the Hugging
Face Hub, stable-diffusion-v1-5/stable-diffusion-v1-5). So every word SD reads already
means something different from its neighbours before the UNet sees it. sd-mini's first text
encoder was trained jointly with its UNet instead, and it learnt what that UNet learnt: colours
and backgrounds, but not shapes. At the shape word of "a red circle", "a red square" and
"a red diamond" its outputs have cosine 0.95-0.98 (its colour words: -0.04 to 0.85), so a UNet
under it gets almost no signal to tell those shapes apart (``shape_word_similarity`` measures it).

``train_clip`` does what CLIP does at toy scale: a small CNN reads a picture's cached latents, the
text encoder reads its caption, and a symmetric cross-entropy over the batch's similarity matrix
(InfoNCE, with CLIP's learnt temperature) pulls each picture towards its own caption. The text
side is pooled by the mean over the caption's tokens (up to EOS) rather than CLIP's EOS vector
alone: with only two layers, that puts the loss on every word's own output, which is what the
UNet's cross-attention reads.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..text import tokenize
from ..training import fit, plot_losses
from .configs import mini_components
from .recipe import load_latents
from .world import SHAPES

SHAPE_PROBE = SHAPES  # the six training shapes, from the world itself (not the held-out heart)


class LatentImageEncoder(nn.Module):
    """CLIP's image tower at toy scale: (B, 4, h, w) latents -> (B, dim) embeddings.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """

    def __init__(self, dim: int = 48, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(4, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # (B, 2w, h/2, w/2)
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),  # (B, 2w, h/4, w/4)
            nn.Flatten(), nn.LazyLinear(dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def text_features(text_encoder: nn.Module, ids: torch.Tensor, eos_token_id: int = 49407) -> torch.Tensor:
    """(B, D): the mean of the text encoder's outputs over each caption's tokens after BOS, up to
    and including its first EOS.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    hidden = text_encoder(ids)[0]  # (B, 77, D)
    pos = torch.arange(ids.shape[1])[None]
    eos = (ids == eos_token_id).int().argmax(dim=1, keepdim=True)  # first EOS of each row
    keep = ((pos >= 1) & (pos <= eos)).float()[..., None]  # (B, 77, 1)
    return (hidden * keep).sum(1) / keep.sum(1)


def clip_loss(img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: picture k's caption is the right answer among the batch's
    captions, and caption k's picture among its pictures.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    logits = logit_scale.exp().clamp(max=100) * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    target = torch.arange(len(img))
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def train_clip(work: Path, steps: int = 2000, batch: int = 256, lr: float = 1e-3, seed: int = 0,
               progress: bool = True, out: Path | None = None) -> Path:
    """Pretrain a fresh sd-mini text encoder contrastively against a latent image encoder on the
    cached training set (``recipe latents``), and save it as ``out/text_encoder`` (a folder that
    ``recipe unet --text-init out --freeze-text`` reads). Checkpoints ``work/clip.pt``.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    latents, input_ids, _ = load_latents(work)
    torch.manual_seed(seed)
    te = mini_components(seed)["text_encoder"]
    img = LatentImageEncoder(te.config.hidden_size)
    img(latents[:1])  # materialise the lazy layer before the optimizer sees its parameters
    head = nn.Linear(te.config.hidden_size, te.config.hidden_size, bias=False)  # CLIP's text projection
    logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature
    holder = nn.ModuleDict({"text_encoder": te, "image": img, "head": head})
    holder.register_parameter("logit_scale", logit_scale)

    def step_fn(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, len(latents), (batch,), generator=gen)
        loss = clip_loss(img(latents[idx]), head(text_features(te, input_ids[idx])), logit_scale)
        return loss, {"scale": float(logit_scale.detach().exp())}

    log = fit(step_fn, list(holder.parameters()), steps, lr=lr, modules={"clip": holder},
              ckpt=work / "clip.pt", progress=progress, desc="clip")["log"]
    plot_losses(log, "loss", work / "clip_loss.png", "mini-CLIP: symmetric InfoNCE")
    out = Path(out) if out else work / "clip"
    te.save_pretrained(out / "text_encoder", safe_serialization=True)
    return out


@torch.no_grad()
def word_similarity(text_encoder: nn.Module, tokenizer, template: str, words: Sequence[str]) -> torch.Tensor:
    """(N, N) cosine similarities of the text encoder's outputs at the word filled into
    ``template`` (one ``{}``), e.g. ``"a red {}"`` with shape words: near 1 off the diagonal means
    the UNet reads those words as one. Each word must be one token (checked before encoding).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    if template.count("{}") != 1:
        raise ValueError(f"template needs exactly one {{}}, got {template!r}")
    if long := [w for w in words if len(tokenizer(w).input_ids) != 3]:  # BOS, the word, EOS
        raise ValueError(f"each word must be one token; these are not: {long}")
    position = len(tokenizer(template.split("{}")[0].strip()).input_ids) - 1  # BOS + prefix tokens
    h = F.normalize(text_encoder(tokenize(tokenizer, [template.format(w) for w in words]))[0][:, position], dim=-1)
    return h @ h.T


def shape_word_similarity(text_encoder: nn.Module, tokenizer, colour: str = "red") -> torch.Tensor:
    """(6, 6) ``word_similarity`` of the six world shapes in "a {colour} {shape}".

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    return word_similarity(text_encoder, tokenizer, f"a {colour} {{}}", SHAPE_PROBE)
