"""SD 1.5's component classes at any size: the builders, SD 1.5's scheduler config and tokenizer,
and ``tiny`` (random weights, SD 1.5 interface sizes). sd-mini's sizes are ``sdlearn.mini.configs``.

All use exactly the diffusers/transformers classes of Stable Diffusion 1.5 — AutoencoderKL,
CLIPTextModel + CLIPTokenizer, UNet2DConditionModel, PNDMScheduler — only smaller.

Introduced in notebooks/00_quick_tour.ipynb.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

BOS, EOS = 49406, 49407
# SD 1.5's scheduler, exactly as its scheduler_config.json has it. PNDM itself ignores
# clip_sample, but the config is shared with DDIM & co. via from_config, where it must stay False.
SD15_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      num_train_timesteps=1000, prediction_type="epsilon", set_alpha_to_one=False,
                      skip_prk_steps=True, steps_offset=1, clip_sample=False, trained_betas=None)


def sd15_scheduler() -> PNDMScheduler:
    """A fresh PNDMScheduler with SD 1.5's configuration.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    return PNDMScheduler.from_config(SD15_SCHEDULER)


def tokenizer_dir() -> Path:
    """The folder of the real CLIP BPE tokenizer files shipped as package data: the vocabulary
    and the merges (see scripts/make_clip_tokenizer.py).

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return Path(str(resources.files("sdlearn") / "data" / "tokenizer"))


def load_tokenizer() -> CLIPTokenizer:
    """SD 1.5's tokenizer: 49,408 tokens, 77 positions, padded with <|endoftext|>. Two text files
    (the vocabulary and the BPE merges) shipped with sdlearn, no weights: every model of the
    course, sd-mini included, tokenizes with exactly these.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return CLIPTokenizer.from_pretrained(tokenizer_dir(), model_max_length=77)


def text_config(hidden: int, layers: int, heads: int, mlp: int) -> CLIPTextConfig:
    """The config of a CLIP text encoder (``CLIPTextModel(text_config(...))``) over the full CLIP
    vocabulary and 77 positions, ``hidden`` wide: the width D of the (B, 77, D) embeddings the
    UNet reads (SD 1.5: 768, 12 layers, 12 heads, MLP 3072).

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return CLIPTextConfig(vocab_size=49408, hidden_size=hidden, intermediate_size=mlp,
                          num_hidden_layers=layers, num_attention_heads=heads,
                          max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=hidden,
                          bos_token_id=BOS, eos_token_id=EOS, pad_token_id=EOS)


def vae_from(channels: tuple[int, ...], groups: int, sample_size: int) -> AutoencoderKL:
    """SD's VAE class (random weights) with one encoder block per entry of ``channels`` and 4
    latent channels. Every block but the last halves the resolution: SD 1.5's four blocks
    (128, 256, 512, 512) give a factor of 2**3 = 8. ``groups``: the group norm's groups.

    Introduced in notebooks/01_vae_latents.ipynb.
    """
    n = len(channels)
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=channels,
                         layers_per_block=1, latent_channels=4, norm_num_groups=groups,
                         sample_size=sample_size)


def unet_from(channels: tuple[int, ...], cross_dim: int, sample_size: int, layers: int, heads: int,
              in_channels: int = 4, plain_levels: int = 0) -> UNet2DConditionModel:
    """SD's UNet class (random weights) at any size: one level per entry of ``channels``, each
    with ``layers`` ResNet + transformer layers, text of width ``cross_dim`` (the text encoder's
    hidden size), ``in_channels`` inputs (4 latents; 5 with depth, 9 for inpainting) and always
    4 outputs, the predicted noise. Every level cross-attends to the text except the
    ``plain_levels`` highest-resolution ones (ResNets only), as SDXL's UNet leaves out attention
    at its highest resolution, where it costs most (Podell et al. 2023, arXiv:2307.01952).

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    n = len(channels)
    if not 0 <= plain_levels < n:
        raise ValueError(f"plain_levels must be in 0..{n - 1} (one level at least attends), got {plain_levels}")
    down = ("DownBlock2D",) * plain_levels + ("CrossAttnDownBlock2D",) * (n - plain_levels)
    up = ("CrossAttnUpBlock2D",) * (n - plain_levels) + ("UpBlock2D",) * plain_levels
    return UNet2DConditionModel(
        sample_size=sample_size, in_channels=in_channels, out_channels=4,
        down_block_types=down, up_block_types=up,
        block_out_channels=channels, layers_per_block=layers, cross_attention_dim=cross_dim,
        attention_head_dim=heads, norm_num_groups=min(32, channels[0] // 2))


def tiny_unet(in_channels: int = 4) -> UNet2DConditionModel:
    """The tiny UNet alone (random weights); ``in_channels=5`` takes a depth map as an extra
    channel (depth2img), ``in_channels=9`` a mask and a masked picture's latents (inpainting).

    Introduced in notebooks/03_unet_noise_prediction.ipynb.
    """
    return unet_from((32, 64), cross_dim=768, sample_size=8, layers=1, heads=8, in_channels=in_channels)


def tiny_components(seed: int = 0) -> dict:
    """Random-weight components with SD 1.5's interface sizes, built in about a second.

    Text embeddings are (1, 77, 768), the VAE maps a 512x512 picture to (1, 4, 64, 64), so every
    printed shape matches the real model; the networks in between are tiny and untrained. Its
    native size (``unet.config.sample_size * 8``) is 64 px so that notebooks run in seconds.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    torch.manual_seed(seed)
    return {
        "vae": vae_from((8, 16, 16, 16), groups=8, sample_size=512),
        "text_encoder": CLIPTextModel(text_config(hidden=768, layers=1, heads=12, mlp=64)),
        "tokenizer": load_tokenizer(),
        "unet": tiny_unet(),
        "scheduler": sd15_scheduler(),
        "safety_checker": None,
        "feature_extractor": None,
    }
