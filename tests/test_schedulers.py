"""Scheduler swapping by name and the noise schedule."""
import math

import numpy as np
import pytest
import torch

from sdlearn.device import make_generator
from sdlearn.sampling import sample
from sdlearn.schedulers import (SCHEDULERS, available_schedulers, describe, make_scheduler,
                                noise_schedule)



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
