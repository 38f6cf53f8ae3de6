"""benchmarks/denoising.py: its keys on the random-weight "tiny" model, and its loss against a
UNet that predicts zero noise (then ε-MSE is the noise's own mean square, about 1)."""
import sys
from types import SimpleNamespace

import pytest
import torch

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


def test_zero_noise_prediction_scores_the_noise_itself(denoising, tiny_pipe):
    class Zero(torch.nn.Module):
        def forward(self, z, t, encoder_hidden_states):
            return SimpleNamespace(sample=torch.zeros_like(z))

    pipe = SimpleNamespace(vae=tiny_pipe.vae, unet=Zero(), scheduler=tiny_pipe.scheduler,
                           tokenizer=tiny_pipe.tokenizer, text_encoder=tiny_pipe.text_encoder)
    res = denoising.probe(pipe, n=4, timesteps=(0, 500), size=64)
    noise = torch.randn((4, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    for r in res["timesteps"]:
        assert r["eps_mse"]["all"] == pytest.approx(float(noise.pow(2).mean()), rel=1e-5)
    assert res["timesteps"][1]["caption_gain"] == pytest.approx(0.0, abs=1e-6)  # it ignores the text
