"""Our hand-written loop against StableDiffusionPipeline: same seed, same picture."""
import numpy as np
import pytest
import torch
from diffusers import (DDIMScheduler, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,
                       EulerDiscreteScheduler, PNDMScheduler, StableDiffusionImg2ImgPipeline)
from diffusers.utils.torch_utils import randn_tensor

from sdlearn.device import make_generator
from sdlearn.sampling import (StepRecorder, decode, denoise, encode_text, guidance_norms, predict_x0,
                              sample, uses_cfg)
from sdlearn.text import cfg_batch

# Euler-type set_timesteps calls np.array(tensor), which numpy 2 flags inside diffusers: not ours.

SCHEDULERS = {
    "ddim": (DDIMScheduler, {}),
    "pndm": (PNDMScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),  # draws noise in step(): generator order
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++"}),
}


@pytest.fixture
def pipe(tiny_pipe):
    original = tiny_pipe.scheduler
    yield tiny_pipe
    tiny_pipe.scheduler = original


def _both(pipe, prompt="a red circle", **kw):
    kw = {"num_inference_steps": 4, "output_type": "np", **kw}
    seed = kw.pop("seed", 0)
    gen = (lambda: [make_generator(seed + i) for i in range(len(prompt))]) if isinstance(prompt, list) \
        else (lambda: make_generator(seed))
    theirs = pipe(prompt, generator=gen(), **kw).images
    ours = sample(pipe, prompt, generator=gen(), **kw)
    return ours, theirs


@pytest.mark.parametrize("name", SCHEDULERS)
def test_parity_with_pipeline(pipe, name):
    cls, kw = SCHEDULERS[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kw)
    ours, theirs = _both(pipe, guidance_scale=7.5)
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_parity_is_not_vacuous(pipe):
    a, _ = _both(pipe, seed=0)
    b, _ = _both(pipe, seed=1)
    c, _ = _both(pipe, seed=0, guidance_scale=3.0)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - c).max() > 1e-3


@pytest.mark.parametrize("g", [0.0, 1.0, 7.5])
def test_guidance_one_pass_below_one(pipe, g):
    batches = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: batches.append(args[0].shape[0]))
    try:
        ours, theirs = _both(pipe, guidance_scale=g)
    finally:
        hook.remove()
    n = len(batches) // 2  # pipeline calls, then ours
    assert batches[:n] == batches[n:]
    assert set(batches) == ({1} if g <= 1 else {2}) == ({2} if uses_cfg(pipe, g) else {1})
    assert np.abs(ours - theirs).max() <= 1e-5


def test_uses_cfg_is_the_pipelines_rule(pipe):
    """Guidance > 1 doubles the batch, unless the UNet takes the guidance scale as an input
    (a guidance embedding, ``time_cond_proj_dim``: LCM); as the pipeline's own property says."""
    from types import SimpleNamespace

    for g in (0.0, 1.0, 1.01, 7.5):
        pipe._guidance_scale = g  # what the pipeline's do_classifier_free_guidance reads
        assert uses_cfg(pipe, g) == pipe.do_classifier_free_guidance == (g > 1)
    lcm = SimpleNamespace(unet=SimpleNamespace(config=SimpleNamespace(time_cond_proj_dim=256)))
    assert not uses_cfg(lcm, 7.5)


def test_encode_text_stacks_uncond_first(pipe):
    cond, uncond = pipe.encode_prompt("a red circle", pipe.device, 1, True, "blue")
    assert torch.equal(encode_text(pipe, "a red circle", "blue", 7.5), cfg_batch(cond, uncond))
    assert torch.equal(encode_text(pipe, "a red circle", "blue", 1.0), cond)


def test_negative_prompt_and_batch(pipe):
    ours, theirs = _both(pipe, negative_prompt="blue")
    assert np.abs(ours - theirs).max() <= 1e-5
    plain, _ = _both(pipe)
    assert np.abs(ours - plain).max() > 1e-4  # the negative prompt changes the picture
    ours, theirs = _both(pipe, ["a red circle", "a blue square"], negative_prompt=["green", ""])
    assert ours.shape[0] == 2 and np.abs(ours - theirs).max() <= 1e-5


def test_given_latents_and_pil_output(pipe):
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    x = torch.randn(1, 4, 8, 8, generator=make_generator(5))
    theirs = pipe("a star", latents=x, num_inference_steps=3).images[0]
    ours = sample(pipe, "a star", latents=x, num_inference_steps=3)[0]
    assert ours.size == (64, 64) and np.array_equal(np.asarray(ours), np.asarray(theirs))
    with pytest.raises(ValueError, match="latents must have shape"):
        sample(pipe, "a star", latents=torch.zeros(1, 4, 4, 4))


def test_callback_record(pipe):
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    rec, pred = StepRecorder(), []
    step = pipe.scheduler.step

    def spy(*a, **k):  # the scheduler's own x0 estimate, to check ours against
        out = step(*a, **{**k, "return_dict": True})
        pred.append(out.pred_original_sample)
        return (out.prev_sample,)

    pipe.scheduler.step = spy
    sample(pipe, "a red circle", num_inference_steps=5, generator=make_generator(0), callback=rec)
    assert len(rec) == 5 and [s["i"] for s in rec.steps] == list(range(5))
    s = rec.steps[0]
    assert {"i", "t", "latents", "noise_pred_uncond", "noise_pred_text", "pred_x0"} <= set(s)
    assert s["latents"].shape == s["pred_x0"].shape == (1, 4, 8, 8)
    assert float(rec.steps[0]["t"]) > float(rec.steps[-1]["t"])  # t counts down
    for r, p in zip(rec.steps, pred):
        assert torch.allclose(r["pred_x0"], p, atol=1e-4)
    norms = rec.guidance_norms()
    assert len(norms) == 5 and all(n > 0 for n in norms)
    rec1 = StepRecorder()
    sample(pipe, "a red circle", num_inference_steps=2, guidance_scale=1.0, callback=rec1)
    assert guidance_norms(rec1.steps) == [None, None] and rec1.steps[0]["noise_pred_uncond"] is None


def test_predict_x0_sigma_space(pipe):
    s = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    s.set_timesteps(10)
    x0, eps = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    x = x0 + s.sigmas[0] * eps  # Euler's latents: x = x0 + sigma * eps
    s.scale_model_input(x, s.timesteps[0])  # sets step_index, as in the loop
    assert torch.allclose(predict_x0(s, x, eps, s.timesteps[0]), x0, atol=1e-4)


@pytest.mark.parametrize("kw,match", [
    ({"height": 60}, "multiple of 8"), ({"width": 0}, "multiple of 8"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"guidance_scale": -1.0}, "guidance_scale"),
    ({"guidance_scale": float("nan")}, "guidance_scale"), ({"prompt": None}, "prompt"),
    ({"negative_prompt": ["x"]}, "negative_prompt"), ({"output_type": "jpeg"}, "output_type"),
    ({"generator": [make_generator(0)] * 2}, "generators"),
])
def test_bad_input_fails_before_compute(pipe, kw, match):
    calls = []
    h1 = pipe.unet.register_forward_pre_hook(lambda *a: calls.append(1))
    h2 = pipe.text_encoder.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(ValueError, match=match):
            sample(pipe, **{"prompt": "a red circle", **kw})
    finally:
        h1.remove()
        h2.remove()
    assert not calls


def test_denoise_reused_for_img2img(pipe):
    """The same loop, started part-way, gives StableDiffusionImg2ImgPipeline's picture."""
    # clip_sample=False as in SD 1.5's config (img2img warns otherwise): latents exceed [-1, 1]
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 64, 64, generator=make_generator(9))
    steps, strength = 10, 0.5
    theirs = img2img("a red circle", image=image, strength=strength, num_inference_steps=steps,
                     generator=make_generator(0), output_type="np").images

    gen = make_generator(0)
    embeds = encode_text(pipe, "a red circle", None, 7.5)
    pipe.scheduler.set_timesteps(steps)
    start = steps - int(steps * strength)
    pixels = pipe.image_processor.preprocess(image)
    z = pipe.vae.encode(pixels).latent_dist.sample(gen) * pipe.vae.config.scaling_factor
    noise = randn_tensor(z.shape, generator=gen, dtype=z.dtype)
    x = pipe.scheduler.add_noise(z, noise, pipe.scheduler.timesteps[start:start + 1])
    with torch.no_grad():
        ours = decode(pipe, denoise(pipe, x, embeds, 7.5, start_step=start, generator=gen), "np")
    assert np.abs(ours - theirs).max() <= 1e-5


def test_step_hook_and_extra_channels(pipe):
    """Inpainting's two needs: edit latents after each step; feed extra UNet input channels."""
    seen = []
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    pipe.scheduler.set_timesteps(3)
    x = torch.randn(1, 4, 8, 8, generator=make_generator(0))
    embeds = encode_text(pipe, "a red circle", None, 7.5)
    out = denoise(pipe, x, embeds, 7.5, step_hook=lambda i, t, lat: seen.append(i) or lat * 0)
    assert seen == [0, 1, 2] and not out.any()
    shapes = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: shapes.append(tuple(args[0].shape)))
    try:
        with pytest.raises(RuntimeError):  # the 4-channel UNet refuses 5 channels: they got there
            pipe.scheduler.set_timesteps(1)
            denoise(pipe, x, embeds, 7.5, extra_channels=torch.zeros(1, 1, 8, 8))
    finally:
        hook.remove()
    assert shapes == [(2, 5, 8, 8)]


@pytest.mark.parametrize("name", ["ddim", "euler"])
def test_guidance_rescale_matches_pipeline(pipe, name):
    """diffusers' own ``rescale_noise_cfg`` at the pipeline's place in the loop: the same picture."""
    cls, kw = SCHEDULERS[name]
    pipe.scheduler = cls.from_config(pipe.scheduler.config, **kw)
    ours, theirs = _both(pipe, guidance_scale=7.5, guidance_rescale=0.7)
    assert np.abs(ours - theirs).max() <= 1e-5
    plain, _ = _both(pipe, guidance_scale=7.5)
    assert np.abs(ours - plain).max() > 1e-4  # the rescale changes the picture: not vacuous
    with pytest.raises(ValueError, match="guidance_rescale"):
        sample(pipe, "a red circle", guidance_rescale=1.5)


def test_guide_hook_moves_latents_before_the_step(pipe):
    """``guide(dict) -> latents`` replaces the latents the scheduler steps from; identity is a no-op."""
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, clip_sample=False)
    embeds = encode_text(pipe, "a red circle", None, 7.5)
    x = torch.randn(1, 4, 8, 8, generator=make_generator(0))
    runs = []
    for guide in (None, lambda d: d["latents"], lambda d: d["latents"] * 0):
        pipe.scheduler.set_timesteps(3)
        runs.append(denoise(pipe, x, embeds, 7.5, guide=guide))
    assert torch.equal(runs[0], runs[1]) and not torch.equal(runs[0], runs[2])
