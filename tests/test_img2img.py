"""img2img by hand (sdlearn.img2img) against StableDiffusionImg2ImgPipeline: same seed, same picture."""
import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from sdlearn.device import make_generator
from sdlearn.images import demo_image
from sdlearn.img2img import get_timesteps, img2img, start_timesteps, strength_table
from sdlearn.latents import count_vae_calls, encode
from sdlearn.models import is_trained, load_pipeline
from sdlearn.schedulers import make_scheduler

# Built by name with make_scheduler from the pipeline's config. What each one exercises:
#   pndm: its repeated warm-up timestep: the slice must match exactly
#   euler: sigma-space: add_noise looks up the begin index
#   euler_a: draws noise in step(): generator order
SCHEDULERS = ["pndm", "ddim", "euler", "euler_a"]
PROMPT = "a red circle on the right"


@pytest.fixture
def pipe(quiet_pipeline):
    return quiet_pipeline("tiny", task="img2img")  # shares tiny's modules, not its scheduler slot


@pytest.fixture(scope="module")
def world():
    # The demo scene is drawn at sd-mini's native 128 px; parity needs no more than the tiny
    # pipeline's 64 px, which keeps these dozens of runs fast.
    return demo_image("world").resize((64, 64), Image.Resampling.LANCZOS)


def _both(pipe, image, prompt=PROMPT, seed=0, **kw):
    kw = {"num_inference_steps": 10, "output_type": "np", **kw}
    gen = (lambda: [make_generator(seed + i) for i in range(len(prompt))]) if isinstance(prompt, list) \
        else (lambda: make_generator(seed))
    images = [image] * len(prompt) if isinstance(prompt, list) else image
    theirs = pipe(prompt, image=images, generator=gen(), **kw).images
    ours = img2img(pipe, prompt, image, generator=gen(), **kw)
    return ours, theirs


@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("strength", [0.3, 0.75, 1.0])
def test_parity_with_pipeline(pipe, world, name, strength):
    pipe.scheduler = make_scheduler(pipe, name)
    ours, theirs = _both(pipe, world, strength=strength)
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_parity_batch_guidance_and_negative(pipe, world):
    ours, theirs = _both(pipe, world, prompt=["a red circle", "a green star"], strength=0.6)
    assert ours.shape[0] == 2 and np.abs(ours - theirs).max() <= 1e-5
    ours, theirs = _both(pipe, world, strength=0.6, guidance_scale=1.0, negative_prompt="blue")
    assert np.abs(ours - theirs).max() <= 1e-5


def test_parity_is_not_vacuous(pipe, world):
    a, _ = _both(pipe, world, strength=0.5)
    b, _ = _both(pipe, world, strength=0.5, seed=1)
    c, _ = _both(pipe, world, strength=0.8)
    assert np.abs(a - b).max() > 1e-3 and np.abs(a - c).max() > 1e-3


def test_low_strength_stays_near_the_picture(pipe, world):
    z0 = encode(pipe.vae, world)
    dist = [float((img2img(pipe, PROMPT, world, strength=s, num_inference_steps=10,
                           generator=make_generator(0), output_type="latent") - z0).pow(2).mean())
            for s in (0.1, 0.5, 1.0)]
    assert dist[0] < dist[1] < dist[2], dist


def test_encoder_once_and_only_the_remaining_steps(pipe, world):
    rows = []
    hook = pipe.unet.register_forward_pre_hook(lambda m, args: rows.append(args[0].shape[0]))
    try:
        with count_vae_calls(pipe.vae) as calls:
            img2img(pipe, PROMPT, world, strength=0.5, num_inference_steps=10)
    finally:
        hook.remove()
    assert calls == {"encoder": 1, "decoder": 1}
    pipe.scheduler.set_timesteps(10)
    assert len(rows) == len(pipe.scheduler.timesteps) - 5 * pipe.scheduler.order  # PNDM: 6 of 11


@pytest.mark.parametrize("steps,strength,expected", [
    (10, 0.5, (5, 5)), (10, 1.0, (10, 0)), (10, 0.25, (2, 8)), (25, 0.2, (5, 20)), (3, 0.99, (2, 1)),
])
def test_get_timesteps_rule(steps, strength, expected):
    assert get_timesteps(steps, strength) == expected


def test_start_timesteps_and_table(pipe):
    s = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    s.set_timesteps(10)
    t_start, ts = start_timesteps(s, 10, 0.3)
    assert t_start == 7 and ts.tolist() == s.timesteps[7:].tolist() and s.begin_index == 7
    rows = strength_table(s, 10, (0.2, 1.0))
    assert [r["init_timestep"] for r in rows] == [2, 10] and [r["t_start"] for r in rows] == [8, 0]
    assert rows[1]["run"] == [True] * 10 and sum(rows[0]["run"]) == 2
    assert rows[0]["t_first"] == float(s.timesteps[8]) and rows[1]["t_first"] == float(s.timesteps[0])


def test_grey_and_rgba_inputs_run_as_converted(pipe, world):
    kw = dict(strength=0.5, num_inference_steps=4, output_type="np")
    grey = world.convert("L")
    a = img2img(pipe, PROMPT, grey, generator=make_generator(0), **kw)
    b = img2img(pipe, PROMPT, grey.convert("RGB"), generator=make_generator(0), **kw)
    assert np.array_equal(a, b)
    rgba = world.convert("RGBA")
    assert np.array_equal(img2img(pipe, PROMPT, rgba, generator=make_generator(0), **kw),
                          img2img(pipe, PROMPT, world, generator=make_generator(0), **kw))


@pytest.mark.parametrize("kw,match", [
    ({"strength": 0.0}, "strength"), ({"strength": 1.01}, "strength"),
    ({"strength": 0.05, "num_inference_steps": 10}, "rounds down to 0"),
    ({"image": Image.new("RGB", (60, 64))}, "multiple of 8"),
    ({"image": Image.new("CMYK", (64, 64))}, "mode 'CMYK'"),
    ({"image": torch.zeros(1, 3, 64, 64)}, "PIL picture"),
    ({"num_inference_steps": 0}, "num_inference_steps"), ({"prompt": 3}, "prompt"),
    ({"output_type": "jpg"}, "output_type"),
])
def test_bad_input_fails_before_compute(pipe, world, kw, match):
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *a: calls.append(1))
             for m in (pipe.unet, pipe.text_encoder, pipe.vae.encoder, pipe.vae.decoder)]
    try:
        with pytest.raises(ValueError, match=match):
            img2img(pipe, **{"prompt": PROMPT, "image": world, "num_inference_steps": 4, **kw})
    finally:
        for h in hooks:
            h.remove()
    assert not calls


@pytest.mark.skipif(not is_trained("mini"), reason="needs the trained sd-mini")
def test_parity_on_sd_mini():
    """Bit for bit (exactly equal) on sd-mini's real weights, whose kernels notice memory
    layouts that tiny's do not (a layout slip shows as a ~1e-6 difference, under 1e-5)."""
    pipe = load_pipeline("mini", task="img2img")
    pipe.set_progress_bar_config(disable=True)
    native = demo_image("world")  # sd-mini's own 128 px
    for kw in ({"strength": 0.3}, {"strength": 1.0, "guidance_scale": 1.0}):
        ours, theirs = _both(pipe, native, **kw)
        assert np.array_equal(ours, theirs), (kw, np.abs(ours - theirs).max())
    ours, theirs = _both(pipe, native, prompt=["a red circle", "a green star"], strength=0.6)
    assert np.array_equal(ours, theirs)
