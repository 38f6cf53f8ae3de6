"""The training code at toy scale: every stage runs, checkpoints, resumes and exports a loadable model."""
import json

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

from sdlearn.mini import recipe


def test_vae_batch_and_psnr():
    rng = np.random.default_rng(0)
    x = recipe.vae_batch(rng, 0, 4, 32, photos=[], photo_frac=0.0)
    assert x.shape == (4, 3, 32, 32) and -1 <= x.min() and x.max() <= 1
    assert recipe.psnr(x, x) > 100
    y = x.clamp(-0.5, 0.5)  # stay inside [-1, 1] after the shift (psnr clamps)
    assert abs(recipe.psnr(y, y + 0.2) - 20.0) < 1e-3  # 0.2 in [-1,1] is 0.1 in [0,1]: 20 dB


def test_min_snr_weighting_formula():
    sched = recipe.noise_scheduler()
    abar = sched.alphas_cumprod
    snr = abar / (1 - abar)
    # high-noise steps (SNR < 5) keep weight 1; low-noise steps are down-weighted to 5/SNR
    w = torch.clamp(snr, max=5.0) / snr
    assert torch.allclose(w[-1], torch.tensor(1.0)) and w[0] < 0.01


def test_all_stages_at_toy_scale(tmp_path):
    recipe.train_vae(tmp_path, steps=2, batch=2, photo_frac=0.0, ckpt_every=1)
    assert torch.load(tmp_path / "vae.pt", weights_only=False)["step"] == 2
    recipe.train_vae(tmp_path, steps=3, batch=2, photo_frac=0.0, ckpt_every=1)  # resumes at 2
    st = torch.load(tmp_path / "vae.pt", weights_only=False)
    assert st["step"] == 3 and [r["step"] for r in st["log"]] == [0, 1, 2]
    recipe.encode_world(tmp_path, n=8, batch=4)
    data = torch.load(tmp_path / "latents.pt", weights_only=False)
    assert data["latents"].shape == (8, 4, 8, 8) and data["input_ids"].shape == (8, 77)
    assert data["uncond_ids"][0, :2].tolist() == [49406, 49407]  # "" = BOS, EOS, padding
    recipe.train_unet(tmp_path, steps=2, batch=4, ckpt_every=1)
    assert (tmp_path / "unet_loss.png").exists() and (tmp_path / "vae_loss.png").exists()
    out = recipe.export(tmp_path, out=tmp_path / "model")
    cfg = json.loads((out / "vae" / "config.json").read_text())
    assert abs(cfg["scaling_factor"] - 1 / data["std"]) < 1e-4
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle", num_inference_steps=2, height=64, width=64).images[0]
    assert img.size == (64, 64)
