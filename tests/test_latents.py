import math

import numpy as np
import pytest
import torch

from sdlearn.images import demo_image
from sdlearn.latents import count_vae_calls, decode, encode, latent_shape, psnr, to_vae_input, vae_factor


def test_factor_and_shape_come_from_the_config(tiny_pipe):
    vae = tiny_pipe.vae
    assert vae_factor(vae) == tiny_pipe.vae_scale_factor == 8  # three downsamplings
    assert latent_shape(vae, 512, 512) == (4, 64, 64)
    assert latent_shape(vae, 512, 768) == (4, 64, 96)
    with pytest.raises(ValueError, match="multiples of 8"):
        latent_shape(vae, 500, 512)


def test_encode_is_scaled_posterior_mean(tiny_pipe):
    vae = tiny_pipe.vae
    x = tiny_pipe.image_processor.preprocess(demo_image("cat"))
    assert x.shape == (1, 3, 512, 512) and x.min() >= -1 and x.max() <= 1
    z = encode(vae, x)
    assert z.shape == (1, 4, 64, 64)
    with torch.no_grad():
        ref = vae.encode(x).latent_dist.mean * vae.config.scaling_factor
    assert torch.equal(z, ref)
    assert torch.equal(encode(vae, demo_image("cat")), z)  # PIL goes through VaeImageProcessor
    # sampling differs from the mean, but is reproducible with a seeded generator
    s1 = encode(vae, x, sample=True, generator=torch.Generator().manual_seed(0))
    s2 = encode(vae, x, sample=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s1, s2) and not torch.equal(s1, z)


def test_decode_undoes_the_scaling(tiny_pipe):
    vae = tiny_pipe.vae
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = decode(vae, z)
    assert out.shape == (1, 3, 64, 64)
    with torch.no_grad():
        ref = vae.decode(z / vae.config.scaling_factor).sample
    assert torch.equal(out, ref)
    pil = tiny_pipe.image_processor.postprocess(out, output_type="pil")[0]
    assert pil.size == (64, 64)


def test_to_vae_input_rejects_latents(tiny_pipe):
    with pytest.raises(ValueError, match="B, 3, H, W"):
        to_vae_input(tiny_pipe.vae, torch.zeros(1, 4, 8, 8))


def test_psnr_matches_hand_formula():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(-1, 1)
    mse = ((a - b) ** 2).mean().item()
    assert psnr(a, b) == pytest.approx(10 * math.log10(4 / mse))
    # [-1, 1] with range 2 equals [0, 1] with range 1: PSNR does not depend on the units
    assert psnr(a, b) == pytest.approx(psnr((a + 1) / 2, (b + 1) / 2, data_range=1.0))
    # and uint8 pictures with range 255
    ua, ub = np.array([[0, 255]], dtype=np.uint8), np.array([[10, 245]], dtype=np.uint8)
    assert psnr(ua, ub, data_range=255) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert psnr(a, a) == math.inf
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, b[:1])


def test_psnr_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(0)
    a = rng.random((8, 8, 3))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    assert psnr(a, b, data_range=1.0) == pytest.approx(metrics.peak_signal_noise_ratio(a, b, data_range=1.0))


def test_txt2img_never_runs_the_encoder(tiny_pipe):
    from sdlearn.models import load_pipeline

    with count_vae_calls(tiny_pipe.vae) as calls:
        tiny_pipe("a cat", height=64, width=64, num_inference_steps=2)
    assert calls == {"encoder": 0, "decoder": 1}
    img2img = load_pipeline("tiny", task="img2img")
    img2img.set_progress_bar_config(disable=True)
    with count_vae_calls(img2img.vae) as calls:
        img2img("a cat", image=demo_image("cat").resize((64, 64)), strength=0.5, num_inference_steps=2)
    assert calls == {"encoder": 1, "decoder": 1}
    # the hooks are gone afterwards
    assert not tiny_pipe.vae.encoder._forward_hooks and not tiny_pipe.vae.decoder._forward_hooks
