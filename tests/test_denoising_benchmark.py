"""benchmarks/denoising.py: its keys on the random-weight "tiny" model, and its loss against a
UNet that predicts zero noise (then ε-MSE is the noise's own mean square, about 1)."""
import sys
from types import SimpleNamespace

import pytest
import torch

REFINE_STARTS = [41, 81, 161, 241, 441]  # the first timestep of each REFINE strength: 25 DDIM steps over SD 1.5's


@pytest.fixture(scope="module")
def denoising(load_benchmark):
    yield load_benchmark("denoising")
    sys.modules.pop("denoising_benchmark", None)


def test_probe_on_tiny(denoising, tiny_pipe, tmp_path):
    res = denoising.main(["--n", "6", "--out", str(tmp_path / "d.json")], pipe=tiny_pipe)
    assert (tmp_path / "d.json").exists() and res["n"] == 6 and sum(res["styles"].values()) == 6
    assert res["size"] == 64  # the tiny model's native size: its pictures are drawn at it
    assert [r["t"] for r in res["timesteps"]] == list(denoising.TIMESTEPS)
    for r in res["timesteps"]:
        assert 0 <= r["x0"]["shape_named_right"] <= 1 and r["eps_mse"]["all"] >= 0
        assert (r["caption_gain"] is None) == (r["t"] == 0)
    assert [r["mix"] for r in res["latent_blur"]] == list(denoising.BLUR_MIX)
    assert all(0 <= r["shape_named_right"] <= 1 and r["shape_n"] > 0 for r in res["latent_blur"])
    assert [r["strength"] for r in res["refine"]] == list(denoising.REFINE)
    assert [r["t_start"] for r in res["refine"]] == REFINE_STARTS
    assert all(r["outline_error"] >= 0 and 0 <= r["shape_named_right"] <= 1 for r in res["refine"])


def test_a_constant_latent_survives_any_blur(denoising, tiny_pipe):
    """The 3x3 box blur (edges averaged over the places inside the picture) leaves a constant
    latent unchanged, so every blur mix decodes to the clean reading."""
    class Const(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def encode(self, x):
            z = torch.full((len(x), 4, 8, 8), 0.3)
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=z, sample=lambda generator=None: z))

        def decode(self, z, **kw):
            return self.vae.decode(z, **kw)

        def __getattr__(self, name):
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.vae, name)

    pipe = SimpleNamespace(vae=Const(tiny_pipe.vae), unet=tiny_pipe.unet, scheduler=tiny_pipe.scheduler,
                           tokenizer=tiny_pipe.tokenizer, text_encoder=tiny_pipe.text_encoder,
                           vae_scale_factor=8)
    res = denoising.probe(pipe, n=4, timesteps=(0,), size=64, refine=())
    clean = res["timesteps"][0]["x0"]
    for r in res["latent_blur"]:
        assert r["shape_named_right"] == clean["shape_named_right"] and r["crispness"] == pytest.approx(clean["crispness"])


def test_zero_noise_prediction_scores_the_noise_itself(denoising, tiny_pipe):
    class Zero(torch.nn.Module):
        def forward(self, z, t, encoder_hidden_states):
            return SimpleNamespace(sample=torch.zeros_like(z))

    pipe = SimpleNamespace(vae=tiny_pipe.vae, unet=Zero(), scheduler=tiny_pipe.scheduler,
                           tokenizer=tiny_pipe.tokenizer, text_encoder=tiny_pipe.text_encoder)
    res = denoising.probe(pipe, n=4, timesteps=(0, 500), size=64, refine=())
    noise = torch.randn((4, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    for r in res["timesteps"]:
        assert r["eps_mse"]["all"] == pytest.approx(float(noise.pow(2).mean()), rel=1e-5)
    assert res["timesteps"][1]["caption_gain"] == pytest.approx(0.0, abs=1e-6)  # it ignores the text


def test_refine_with_the_true_noise_returns_the_ground_truth(denoising, tiny_pipe):
    """A UNet that knows the clean latents, and so predicts the exact noise, makes DDIM land on
    them from any strength: the refine reading measures only the model's own error. (Exactly, on
    x_0 at SD's last alpha: with ``set_alpha_to_one=False`` DDIM's last step goes to ᾱ_0 = 0.99915,
    not to 1, so √(1-ᾱ_0) = 0.029 of the noise stays, as in the pipeline.)"""
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    z0 = torch.randn((3, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(2))
    abar = tiny_pipe.scheduler.alphas_cumprod

    class Oracle(torch.nn.Module):
        def forward(self, z, t, encoder_hidden_states, return_dict=True):
            a = abar[t].reshape(-1, 1, 1, 1)
            return UNet2DConditionOutput(sample=(z - a.sqrt() * z0) / (1 - a).sqrt())  # eps = (x_t - √ᾱ x0) / √(1-ᾱ)

    pipe = SimpleNamespace(unet=Oracle(), scheduler=tiny_pipe.scheduler)
    emb = torch.zeros(3, 77, 32)
    assert not tiny_pipe.scheduler.config.set_alpha_to_one
    end = abar[0].sqrt() * z0 + (1 - abar[0]).sqrt() * noise
    for strength, first in zip(denoising.REFINE, REFINE_STARTS):
        t_start, z = denoising.refine_latents(pipe, z0, noise, emb, strength)
        assert t_start == first
        assert torch.allclose(z, end, atol=1e-4)
        assert not torch.allclose(z, z0, atol=1e-4)  # the check can tell 0.029 of the noise
