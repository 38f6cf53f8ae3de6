"""Scheduler swapping by name and the noise schedule."""
import math

import numpy as np
import pytest
import torch

from sdlearn.device import make_generator
from sdlearn.sampling import sample
from sdlearn.schedulers import (ADAMS_BASHFORTH, SCHEDULERS, available_schedulers, describe, guided_stiffness,
                                jacobian_radius, make_scheduler, noise_schedule, stability_limit)



@pytest.fixture
def pipe(tiny_pipe):
    original = tiny_pipe.scheduler
    yield tiny_pipe
    tiny_pipe.scheduler = original


def test_names_build_compatible_schedulers(pipe):
    assert set(SCHEDULERS) == {"ddim", "pndm", "euler", "euler_a", "dpm++", "lms", "heun", "unipc"}
    assert available_schedulers(pipe) == list(SCHEDULERS)  # scipy is a dependency: LMS works
    compatible = {c.__name__ for c in pipe.scheduler.compatibles} | {"PNDMScheduler"}
    for name, spec in SCHEDULERS.items():
        s = make_scheduler(pipe, name)
        assert type(s).__name__ == spec.cls and spec.cls in compatible
        assert all(s.config[k] == v for k, v in spec.overrides.items())
        assert s.config.beta_schedule == "scaled_linear" and s.config.beta_end == 0.012
    assert make_scheduler(pipe, "dpm++").config.algorithm_type == "dpmsolver++"
    assert make_scheduler(pipe, "ddim").config.clip_sample is False  # latents are not in [-1, 1]
    assert make_scheduler(pipe, "euler", timestep_spacing="leading").config.timestep_spacing == "leading"
    with pytest.raises(ValueError, match="unknown scheduler"):
        make_scheduler(pipe, "k_lms")


def test_missing_extra_package(pipe, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "scipy" else real(n, *a))
    with pytest.raises(ValueError, match="scipy"):
        make_scheduler(pipe, "lms")
    assert "lms" not in available_schedulers(pipe)


def test_noise_schedule_matches_diffusers(pipe):
    ns = noise_schedule(pipe)
    s = pipe.scheduler
    assert np.allclose(ns["betas"], s.betas.double().numpy(), atol=1e-7)
    assert np.allclose(ns["alphas_cumprod"], s.alphas_cumprod.double().numpy(), atol=1e-6)
    assert np.allclose(ns["signal"] ** 2 + ns["noise"] ** 2, 1.0)
    assert np.all(np.diff(ns["alphas_cumprod"]) < 0) and np.all(np.diff(ns["sigmas"]) > 0)
    assert ns["sigmas"][-1] == pytest.approx(14.6146, abs=1e-3)  # sigma_max of SD's betas


def test_init_noise_sigma(pipe):
    sigma = noise_schedule(pipe)["sigmas"]
    assert float(make_scheduler(pipe, "ddim").init_noise_sigma) == 1.0
    euler = make_scheduler(pipe, "euler")  # linspace spacing: starts at t = 999, x_T = sigma_max eps
    euler.set_timesteps(25)
    assert float(euler.init_noise_sigma) == pytest.approx(sigma[999], rel=1e-5)
    lead = make_scheduler(pipe, "euler", timestep_spacing="leading")  # starts at t = 961
    lead.set_timesteps(25)
    assert int(lead.timesteps[0]) == 961
    assert float(lead.init_noise_sigma) == pytest.approx(math.sqrt(sigma[961] ** 2 + 1), rel=1e-5)


def test_describe(pipe):
    rows = {n: describe(make_scheduler(pipe, n), 10) for n in SCHEDULERS}
    assert rows["heun"]["unet_calls"] == 19 and rows["heun"]["order"] == 2
    assert rows["pndm"]["unet_calls"] == 11  # PLMS warm-up repeats one timestep
    assert rows["euler_a"]["stochastic"] and not rows["euler"]["stochastic"]
    assert not rows["ddim"]["stochastic"] and not rows["dpm++"]["stochastic"]


@pytest.mark.parametrize("name", ["lms", "heun", "unipc"])
def test_more_schedulers_match_pipeline(pipe, name):
    pipe.scheduler = make_scheduler(pipe, name)
    kw = dict(num_inference_steps=3, output_type="np")
    theirs = pipe("a blue square", generator=make_generator(1), **kw).images
    ours = sample(pipe, "a blue square", generator=make_generator(1), **kw)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_adams_bashforth_rows_are_exact_for_polynomials():
    """Order k integrates f over one step exactly when f is a polynomial of degree < k: with the
    points at s = 0, -1, -2, ... (newest first), sum_j b_j (-j)^m = integral_0^1 s^m ds = 1 / (m + 1)."""
    for k, b in ADAMS_BASHFORTH.items():
        assert len(b) == k
        for m in range(k):
            assert math.isclose(sum(c * (-j) ** m for j, c in enumerate(b)), 1 / (m + 1), abs_tol=1e-12), (k, m)


def test_stability_limits():
    """The textbook real-axis limits (Euler 2, AB2 1, AB3 6/11, AB4 3/10), and what they mean: the
    recurrence x_{n+1} = x_n - z sum_j b_j x_{n-j} stays bounded just below the limit, blows up above."""
    assert [stability_limit(k) for k in (1, 2, 3, 4)] == pytest.approx([2, 1, 6 / 11, 3 / 10], abs=1e-8)
    for k, b in ADAMS_BASHFORTH.items():
        for factor, bounded in ((0.97, True), (1.05, False)):
            z, xs = factor * stability_limit(k), [1.0] * k
            for _ in range(3000):
                xs.append(xs[-1] - z * sum(c * xs[-1 - j] for j, c in enumerate(b)))
            assert (abs(xs[-1]) < 1) is bounded, (k, factor, xs[-1])
    with pytest.raises(ValueError, match="order must be one of"):
        stability_limit(5)


def test_jacobian_radius_of_a_linear_map():
    scale = torch.full((2, 3, 4, 4), 0.5)
    scale[0, 1, 2, 3], scale[1, 0, 0, 0] = 3.0, -2.0  # each sample's dominant eigenvalue, with its sign
    rho = jacobian_radius(lambda x: scale * x + 1.0, torch.randn(2, 3, 4, 4), iters=40,
                          generator=torch.Generator().manual_seed(0))
    assert rho.tolist() == pytest.approx([3.0, -2.0], rel=1e-3)
    with pytest.raises(ValueError, match="iters"):
        jacobian_radius(lambda x: x, torch.zeros(1, 2), iters=0)


def test_guided_stiffness_rows(pipe):
    """One row per DDIM step with z = h sqrt(abar_t) rho; h the step in sigma_bar = sqrt((1 - abar) / abar)."""
    from sdlearn.sampling import encode_text, initial_latents

    with torch.no_grad():
        embeds = encode_text(pipe, ["a red circle", "a blue square"], None, 7.5)
    x = initial_latents(pipe, 2, 64, 64, embeds.dtype, torch.Generator().manual_seed(0))
    rows = guided_stiffness(pipe, embeds, x, 7.5, num_inference_steps=5, iters=3)
    ddim = make_scheduler(pipe, "ddim")
    ddim.set_timesteps(5)
    assert [r["t"] for r in rows] == ddim.timesteps.tolist()
    sig = noise_schedule(pipe)["sigmas"]
    acp = noise_schedule(pipe)["alphas_cumprod"]
    for r, t_next in zip(rows, [*ddim.timesteps.tolist()[1:], 0]):  # final step: to abar_0 (set_alpha_to_one False)
        assert r["h"] == pytest.approx(sig[r["t"]] - sig[t_next], rel=1e-4)
        assert r["z"] == pytest.approx(r["h"] * math.sqrt(acp[r["t"]]) * r["rho"], rel=1e-4)
    with pytest.raises(ValueError, match=r"\[uncond; cond\]"):  # before any compute
        guided_stiffness(pipe, embeds[:2], torch.zeros(2, 4, 8, 8), 7.5)
