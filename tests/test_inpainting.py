"""Inpainting by hand (sdlearn.inpainting) against StableDiffusionInpaintPipeline, both UNet kinds."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline
from PIL import Image

from sdlearn.architectures import unet_from
from sdlearn.device import make_generator
from sdlearn.images import demo_image, demo_mask
from sdlearn.img2img import encode_image
from sdlearn.inpainting import (as_mask, block_mask, inpaint, mask_tensors, psnr_outside,
                                random_inpainting_pipeline, unet_kind)
from sdlearn.latents import count_vae_calls, to_vae_input
from sdlearn.models import is_trained, load_pipeline
from sdlearn.schedulers import make_scheduler

# Built by name with make_scheduler from the pipeline's config. What each one exercises:
#   euler: sigma-space add_noise inside the blend
#   euler_a: the three random draws must be in order
SCHEDULERS = ["pndm", "ddim", "euler", "euler_a"]
PROMPT = "a red circle on the right"


@pytest.fixture
def pipe4(quiet_pipeline):
    return quiet_pipeline("tiny", task="inpaint")  # shares tiny's modules, not its scheduler slot


@pytest.fixture(scope="module")
def pipe9():
    return random_inpainting_pipeline()


@pytest.fixture(scope="module")
def world():
    # The demo scene is drawn at sd-mini's native 128 px; parity needs no more than the tiny
    # pipelines' 64 px, which keeps these dozens of runs fast (NEAREST keeps the mask binary).
    return (demo_image("world").resize((64, 64), Image.Resampling.LANCZOS),
            demo_mask("world").resize((64, 64), Image.Resampling.NEAREST))


def _both(pipe, world, prompt=PROMPT, seed=0, **kw):
    image, mask = world
    kw = {"num_inference_steps": 6, "output_type": "np", **kw}
    if isinstance(prompt, list):
        gen = lambda: [make_generator(seed + i) for i in range(len(prompt))]  # noqa: E731
        theirs = pipe(prompt, image=[image] * len(prompt), mask_image=[mask] * len(prompt),
                      generator=gen(), **kw).images
    else:
        gen = lambda: make_generator(seed)  # noqa: E731
        theirs = pipe(prompt, image=image, mask_image=mask, generator=gen(), **kw).images
    return inpaint(pipe, prompt, image, mask, generator=gen(), **kw), theirs


@pytest.mark.parametrize("which", ["pipe4", "pipe9"])
@pytest.mark.parametrize("name", SCHEDULERS)
@pytest.mark.parametrize("strength", [0.5, 1.0])
def test_parity_with_pipeline(request, world, which, name, strength):
    pipe = request.getfixturevalue(which)
    original = pipe.scheduler
    pipe.scheduler = make_scheduler(original, name)
    try:
        ours, theirs = _both(pipe, world, strength=strength)
    finally:
        pipe.scheduler = original
    assert ours.shape == theirs.shape == (1, 64, 64, 3)
    assert np.abs(ours - theirs).max() <= 1e-5


@pytest.mark.parametrize("which", ["pipe4", "pipe9"])
def test_parity_batch_and_no_guidance(request, world, which):
    pipe = request.getfixturevalue(which)
    ours, theirs = _both(pipe, world, prompt=["a red circle", "a green star"])
    assert ours.shape[0] == 2 and np.abs(ours - theirs).max() <= 1e-5
    ours, theirs = _both(pipe, world, guidance_scale=1.0)
    assert np.abs(ours - theirs).max() <= 1e-5
    other, _ = _both(pipe, world, seed=1)
    assert np.abs(ours - other).max() > 1e-3  # not vacuous


def test_unet_kind(pipe4, pipe9):
    assert unet_kind(pipe4) == "blend" and unet_kind(pipe9) == "9-channel"
    fake = SimpleNamespace(vae=pipe4.vae, unet=SimpleNamespace(config=SimpleNamespace(in_channels=5)))
    with pytest.raises(ValueError, match="5 input channels"):
        unet_kind(fake)


def test_blend_keeps_the_known_latents_exactly(pipe4, world):
    """After the last step the known region is the picture's own (clean) latent, bit for bit."""
    image, mask = world
    out = inpaint(pipe4, PROMPT, image, mask, num_inference_steps=5, generator=make_generator(0),
                  output_type="latent")
    z0 = encode_image(pipe4, to_vae_input(pipe4.vae, [image]), make_generator(0))  # draw 1
    _, m = mask_tensors(mask, 1, tuple(out.shape[-2:]))
    keep = (m == 0).expand_as(out)
    assert keep.any() and (~keep).any()
    assert torch.equal(out[keep], z0[keep])
    assert not torch.allclose(out[~keep], z0[~keep])  # ...and the hole was repainted


def test_nine_channel_unet_input(pipe9, world):
    image, mask = world
    seen = []
    hook = pipe9.unet.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        with count_vae_calls(pipe9.vae) as calls:
            inpaint(pipe9, PROMPT, image, mask, num_inference_steps=2)
    finally:
        hook.remove()
    assert calls == {"encoder": 1, "decoder": 1}  # strength 1: only the masked picture is encoded
    x = seen[0]
    assert x.shape == (2, 9, 8, 8)  # [uncond; cond] x (4 latents + 1 mask + 4 masked latents)
    _, m = mask_tensors(mask, 2, (8, 8))
    assert torch.equal(x[:, 4:5], m)
    assert torch.equal(x[0, 5:], x[1, 5:]) and not torch.equal(x[0, :4], x[0, 5:])


def test_blend_encodes_picture_and_masked_picture(pipe4, world):
    with count_vae_calls(pipe4.vae) as calls:
        inpaint(pipe4, PROMPT, *world, num_inference_steps=2)
    assert calls == {"encoder": 2, "decoder": 1}  # as the pipeline: the masked one only for RNG order


def test_random_pipeline_is_fixed_and_leaves_global_rng(pipe9):
    state = torch.random.get_rng_state()
    other = random_inpainting_pipeline()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert other.unet.config.in_channels == 9
    assert all(torch.equal(a, b) for a, b in zip(other.unet.parameters(), pipe9.unet.parameters()))


def test_mask_tensors_binarise_and_shrink():
    arr = np.zeros((16, 16), np.uint8)
    arr[:8, :8] = 128  # >= 0.5: repaint
    arr[8:, 8:] = 127  # < 0.5: keep
    arr[1:8, 8:] = 255  # top-left pixel (0, 8) of the top-right block is 0: that cell is kept
    pix, lat = mask_tensors(Image.fromarray(arr), 2, (2, 2))
    assert pix.shape == (2, 1, 16, 16) and set(pix.unique().tolist()) == {0.0, 1.0}
    assert lat.shape == (2, 1, 2, 2) and lat[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]


def test_block_mask_covers_every_touched_cell(world):
    arr = np.zeros((16, 16), np.uint8)
    arr[7, 9] = 200  # one pixel in the top-right block (not its top-left pixel)
    grown = np.asarray(block_mask(Image.fromarray(arr), 8))
    assert grown[:8, 8:].min() == 255 and grown[8:].max() == 0 and grown[:8, :8].max() == 0
    _, lat = mask_tensors(Image.fromarray(arr), 1, (2, 2))
    assert lat.sum() == 0  # the nearest shrink misses that pixel entirely...
    _, lat = mask_tensors(block_mask(Image.fromarray(arr), 8), 1, (2, 2))
    assert lat[0, 0].tolist() == [[0.0, 1.0], [0.0, 0.0]]  # ...the block mask does not
    _, mask = world
    _, coarse = mask_tensors(mask, 1, (8, 8))
    _, grown = mask_tensors(block_mask(mask, 8), 1, (8, 8))
    assert (grown >= coarse).all() and grown.sum() > coarse.sum()
    with pytest.raises(ValueError, match="multiples of factor=8"):
        block_mask(Image.new("L", (12, 16)), 8)


def test_as_mask_rules():
    grey = Image.new("L", (8, 8), 200)
    assert as_mask(grey) is grey
    rgb = as_mask(Image.new("RGB", (8, 8), (255, 255, 255)))
    assert rgb.mode == "L" and rgb.getpixel((0, 0)) == 255
    assert as_mask(Image.new("1", (8, 8), 1)).getpixel((0, 0)) == 255
    assert as_mask(np.ones((8, 8), bool)).getpixel((0, 0)) == 255
    assert as_mask(np.full((8, 8), 0.5)).getpixel((0, 0)) == 128
    assert as_mask(np.zeros((8, 8, 1), np.uint8)).size == (8, 8)
    for bad, match in [
        (Image.new("RGB", (8, 8), (255, 0, 0)), "colour channels differ"),
        (Image.new("RGBA", (8, 8), (255, 255, 255, 0)), "transparent"),
        (np.zeros((8, 8, 3), np.uint8), "single-channel"),
        (np.full((8, 8), 2.0), r"\[0, 1\]"), (np.zeros((8, 8), np.int64), "uint8, bool or float"),
        (Image.new("F", (8, 8)), "mode 'F'"), (torch.zeros(8, 8), "PIL picture or an array"),
    ]:
        with pytest.raises(ValueError, match=match):
            as_mask(bad)
    with pytest.raises(ValueError, match="mask is 8x8 px but the picture is 16x8"):
        as_mask(grey, (16, 8))


def test_grey_rgb_mask_runs_like_l(pipe4, world):
    """A grey mask saved as RGB (three equal channels) is accepted: it becomes the L mask."""
    image, mask = world
    as_l = as_mask(mask.convert("RGB"), image.size)
    assert as_l.mode == "L" and np.array_equal(np.asarray(as_l), np.asarray(mask))
    kw = dict(num_inference_steps=3, output_type="np")
    a = inpaint(pipe4, PROMPT, image, mask.convert("RGB"), generator=make_generator(0), **kw)
    b = inpaint(pipe4, PROMPT, image, mask, generator=make_generator(0), **kw)
    assert np.array_equal(a, b)


def test_psnr_outside():
    a = np.zeros((16, 16, 3), np.uint8)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    b = a.copy()
    b[4:8, 4:8] = 255  # changed only inside the mask
    assert psnr_outside(a, b, mask) == math.inf
    b[8, 8] = 255  # one pixel just outside: counted, unless the margin leaves it out
    assert 20 < psnr_outside(a, b, mask) < 30
    assert psnr_outside(a, b, mask, margin=1) == math.inf
    with pytest.raises(ValueError, match="no pixel outside"):
        psnr_outside(a, b, np.full((16, 16), 255, np.uint8))
    with pytest.raises(ValueError, match="must match"):
        psnr_outside(a, b, mask[:8])


def test_red_on_black_mask_is_refused_before_compute(pipe4, world, count_calls):
    image, mask = world
    red = Image.merge("RGB", [mask, Image.new("L", mask.size, 0), Image.new("L", mask.size, 0)])
    with count_calls(pipe4) as calls, pytest.raises(ValueError, match="not single-channel and its colour channels differ"):
        inpaint(pipe4, PROMPT, image, red, num_inference_steps=4)
    assert not calls


@pytest.mark.parametrize("kw,match", [
    # the cases notebook 07 used to show, with their messages
    ({"mask": Image.new("L", (32, 32))}, "mask is 32x32 px but the picture is 64x64: they must match"),
    ({"mask": Image.new("RGB", (64, 64), (255, 0, 0))},
     r"mask \(mode RGB\) is not single-channel and its colour channels differ"),
    ({"mask": Image.new("RGBA", (64, 64), (255, 255, 255, 0))}, r"mask \(mode RGBA\) has transparent pixels"),
    ({"mask": np.zeros((64, 64, 3), np.uint8)}, "single-channel"),
    ({"strength": 0.0}, r"strength must be a number in \(0, 1\]"), ({"strength": 0}, "strength"),
    ({"strength": 2.0}, "strength"), ({"strength": -1}, "strength"),
    ({"image": Image.new("CMYK", (64, 64))}, "image has mode 'CMYK'; expected RGB"),
    ({"image": Image.new("RGB", (60, 60)), "mask": Image.new("L", (60, 60))}, "multiple of 8"),
    ({"guidance_scale": -1.0}, "guidance_scale"),
])
@pytest.mark.parametrize("which", ["pipe4", "pipe9"])
def test_bad_input_fails_before_compute(request, world, which, kw, match, count_calls):
    pipe = request.getfixturevalue(which)
    with count_calls(pipe) as calls, pytest.raises(ValueError, match=match):
        inpaint(pipe, **{"prompt": PROMPT, "image": world[0], "mask": world[1], "num_inference_steps": 4, **kw})
    assert not calls


@pytest.mark.skipif(not is_trained("mini"), reason="needs the trained sd-mini")
@pytest.mark.parametrize("channels", [4, 9])
def test_parity_on_sd_mini(channels):
    """Exactly equal on sd-mini's real weights, where the memory layout of the pasted latents
    changes the UNet's kernels (tiny's do not notice; the last test measures the slip).
    9 channels: a random UNet of mini's shape."""
    pipe = load_pipeline("mini", task="inpaint")
    if channels == 9:
        c = pipe.unet.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            unet = unet_from(tuple(c.block_out_channels), c.cross_attention_dim, c.sample_size,
                         c.layers_per_block, c.attention_head_dim, in_channels=9)
        pipe = StableDiffusionInpaintPipeline(**{**pipe.components, "unet": unet},
                                              requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    native = demo_image("world"), demo_mask("world")  # sd-mini's own 128 px
    for kw in ({"strength": 1.0}, {"strength": 0.6, "guidance_scale": 1.0}):
        ours, theirs = _both(pipe, native, **kw)
        assert np.array_equal(ours, theirs), (kw, np.abs(ours - theirs).max())


@pytest.mark.skipif(not is_trained("mini"), reason="needs the trained sd-mini")
def test_contiguous_known_latents_matter_on_sd_mini():
    """Re-blending by hand (notebook 07, section 4): the encoder hands back z0 in channels-last
    memory (its input, the pixel view, is); the pipeline pastes a contiguous copy, and the UNet
    picks its kernels by the layout. With ``z0.contiguous()`` the picture is the pipeline's
    exactly; without, it differs a little (6e-6 measured), not zero."""
    from diffusers.utils.torch_utils import randn_tensor

    from sdlearn.inpainting import KnownRegionBlend
    from sdlearn.sampling import decode, denoise, encode_text

    pipe = load_pipeline("mini", task="inpaint")
    pipe.set_progress_bar_config(disable=True)
    image, mask, steps = demo_image("world"), demo_mask("world"), 10

    def by_hand(contiguous):
        gen, s = make_generator(0), pipe.scheduler
        with torch.no_grad():
            embeds = encode_text(pipe, PROMPT, None, 7.5, "cpu")
            s.set_timesteps(steps)
            pixels = to_vae_input(pipe.vae, [image])
            m_pix, m_lat = mask_tensors(mask, 1, (16, 16))
            z0 = encode_image(pipe, pixels, gen)  # draw 1
            assert z0.is_contiguous(memory_format=torch.channels_last) and not z0.is_contiguous()
            z0 = z0.contiguous() if contiguous else z0
            noise = randn_tensor(z0.shape, generator=gen, dtype=z0.dtype)  # draw 2
            encode_image(pipe, pixels * (m_pix < 0.5), gen)  # draw 3, for the RNG only
            x = denoise(pipe, noise * s.init_noise_sigma, embeds, 7.5, generator=gen,
                        step_hook=KnownRegionBlend(s, z0, noise, m_lat, s.timesteps))
            return decode(pipe, x, "np")

    theirs = pipe(PROMPT, image=image, mask_image=mask, num_inference_steps=steps,
                  generator=make_generator(0), output_type="np").images
    assert np.array_equal(by_hand(True), theirs)
    slip = float(np.abs(by_hand(False) - theirs).max())
    assert slip < 1e-4, slip  # non-zero on x86 CPUs; other kernels may match exactly
