"""Loss-guided sampling: at scale 0 it is our loop exactly; with a scale it lowers the loss."""
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, EulerDiscreteScheduler

from sdlearn.device import make_generator
from sdlearn.guidance import blue_loss, loss_guided_sample, loss_step, noise_variance
from sdlearn.sampling import sample


@pytest.fixture
def pipe(tiny_pipe):
    original = tiny_pipe.scheduler
    tiny_pipe.scheduler = DDIMScheduler.from_config(original.config, clip_sample=False)
    yield tiny_pipe
    tiny_pipe.scheduler = original


def test_blue_loss_formula():
    images = torch.rand(2, 3, 4, 4, generator=make_generator(0))
    expected = [float(np.abs(images[b, 2].numpy() - 0.9).mean()) for b in range(2)]
    assert blue_loss(images).shape == (2,)
    assert torch.allclose(blue_loss(images), torch.tensor(expected), atol=1e-6)


def test_scale_zero_is_sample_bit_for_bit(pipe):
    kw = dict(num_inference_steps=4, guidance_scale=7.5, output_type="np")
    ours = loss_guided_sample(pipe, ["a red circle", "a star"], blue_loss, 0.0,
                              generator=[make_generator(0), make_generator(1)], **kw)
    plain = sample(pipe, ["a red circle", "a star"], generator=[make_generator(0), make_generator(1)], **kw)
    assert np.array_equal(ours, plain)


def test_guidance_lowers_the_loss(pipe):
    kw = dict(num_inference_steps=6, guidance_scale=7.5, output_type="pt")
    plain = sample(pipe, "a red circle", generator=make_generator(0), **kw)
    guided = loss_guided_sample(pipe, "a red circle", blue_loss, 1000.0, generator=make_generator(0), **kw)
    assert float(blue_loss(guided)) < float(blue_loss(plain)) - 0.002  # random weights: a small but real drop
    # and each step is a descent step: the loss of the moved latents' x0_hat is lower
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[2]
    x, eps = torch.randn(1, 4, 8, 8, generator=make_generator(1)), torch.randn(1, 4, 8, 8, generator=make_generator(2))
    moved, before = loss_step(pipe, x, eps, t, blue_loss, 1000.0)
    _, after = loss_step(pipe, moved, eps, t, blue_loss, 0.0)
    assert float(after) < float(before)


def test_every_and_losses_record(pipe):
    losses = []
    loss_guided_sample(pipe, "a red circle", blue_loss, 10.0, every=2, num_inference_steps=5,
                       generator=make_generator(0), output_type="np", losses=losses)
    assert len(losses) == 3 and all(v.shape == (1,) for v in losses)  # steps 0, 2, 4


def test_loss_step_is_the_formula(pipe):
    """latents - scale * (1 - abar_t) * d loss(decode(x0_hat)) / d latents, checked by autograd by hand."""
    pipe.scheduler.set_timesteps(10)
    t = pipe.scheduler.timesteps[3]
    x, eps = torch.randn(1, 4, 8, 8, generator=make_generator(1)), torch.randn(1, 4, 8, 8, generator=make_generator(2))
    abar = pipe.scheduler.alphas_cumprod[int(t)]
    assert noise_variance(pipe.scheduler, t) == pytest.approx(float(1 - abar), rel=1e-5)
    xg = x.clone().requires_grad_(True)
    x0 = (xg - (1 - abar).sqrt() * eps) / abar.sqrt()
    loss = blue_loss(pipe.vae.decode(x0 / pipe.vae.config.scaling_factor).sample / 2 + 0.5)
    (grad,) = torch.autograd.grad(loss.sum(), xg)
    moved, got = loss_step(pipe, x, eps, t, blue_loss, 5.0)
    assert torch.allclose(got, loss.detach(), atol=1e-6)
    assert torch.allclose(moved, x - 5.0 * (1 - abar) * grad, atol=1e-5)


def test_noise_variance_sigma_space(pipe):
    s = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    s.set_timesteps(10)
    s.scale_model_input(torch.zeros(1, 4, 8, 8), s.timesteps[2])
    assert noise_variance(s, s.timesteps[2]) == pytest.approx(float(s.sigmas[s.step_index]) ** 2, rel=1e-5)


@pytest.mark.parametrize("kw,match", [
    ({"loss_scale": -1.0}, "loss_scale"), ({"loss_scale": float("inf")}, "loss_scale"),
    ({"every": 0}, "every"), ({"loss_fn": None}, "loss_fn"), ({"height": 60}, "multiple of 8"),
])
def test_bad_input_fails_before_compute(pipe, kw, match, count_calls):
    with count_calls(pipe) as calls, pytest.raises(ValueError, match=match):
        loss_guided_sample(pipe, **{"prompt": "a red circle", "loss_fn": blue_loss, "loss_scale": 1.0, **kw})
    assert not calls


def test_loss_must_be_per_picture(pipe):
    with pytest.raises(ValueError, match="one loss per picture"):
        loss_guided_sample(pipe, "a red circle", lambda im: im.mean(), 1.0, num_inference_steps=1)


def test_guidance_rescale_benchmark_runs(load_benchmark, tmp_path):
    """benchmarks/guidance_rescale.py end to end on the random-weight model (keys only)."""
    import json

    bench = load_benchmark("guidance_rescale")
    out = tmp_path / "rescale.json"
    result = bench.main(["--model", "tiny", "--n", "2", "--steps", "2", "--batch", "2", "--out", str(out)])
    assert json.loads(out.read_text())["n_prompts"] == 2
    assert [(s["w"], s["rescale"]) for s in result["settings"]] == [(7.5, 0.0), (7.5, 0.7), (15.0, 0.0), (15.0, 0.7)]
    assert set(result["effect_of_rescale"]["by_w"]) == {"7.5", "15"}
    assert {"colour", "clipped", "saturation"} <= set(result["effect_of_rescale"]["by_w"]["15"])
