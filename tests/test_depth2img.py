"""Depth-to-image by hand vs StableDiffusionDepth2ImgPipeline; bad depth maps refused before compute."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdlearn.depth2img import as_depth, depth2img
from sdlearn.device import make_generator
from sdlearn.images import demo_depth, demo_image
from sdlearn.models import mini_path
from sdlearn.schedulers import make_scheduler


@pytest.fixture(scope="module")
def tiny_depth(quiet_pipeline):
    return quiet_pipeline("tiny", task="depth")


@pytest.mark.parametrize("scheduler", ["pndm", "euler", "ddim"])
@pytest.mark.parametrize("guidance", [1.0, 7.5])
def test_parity_with_the_pipeline(tiny_depth, scheduler, guidance):
    own = tiny_depth.scheduler
    tiny_depth.scheduler = make_scheduler(own, scheduler)
    try:
        image, depth = demo_image("world"), torch.from_numpy(demo_depth("world"))[None]
        kw = dict(strength=0.7, num_inference_steps=4, guidance_scale=guidance, output_type="np")
        ref = tiny_depth("a red circle", image=image, depth_map=depth, generator=make_generator(3), **kw).images
        ours = depth2img(tiny_depth, "a red circle", image, depth, generator=make_generator(3), **kw)
    finally:
        tiny_depth.scheduler = own
    assert np.array_equal(ours, ref)


def test_as_depth_accepts_common_forms():
    d = demo_depth("world")
    for form in (d, d[None], d[..., None], torch.from_numpy(d), Image.fromarray((d * 255).astype(np.uint8)),
                 Image.fromarray(d, mode="F")):
        out = as_depth(form, (d.shape[1], d.shape[0]))
        assert out.shape == (1, *d.shape) and out.dtype == torch.float32
    assert as_depth(np.random.rand(384, 384), (64, 64)).shape == (1, 384, 384)  # DPT's size: fine


@pytest.mark.parametrize("bad, match", [
    (Image.new("RGB", (64, 64)), "single-channel"), (np.zeros((64, 64, 3), np.float32), "single-channel"),
    (np.random.rand(32, 64).astype(np.float32), "64x32 but the picture is 128x128: not the same aspect"),
    (np.ones((64, 64), np.float32), "flat"), (np.full((64, 64), np.nan, np.float32), "NaN"),
    ("depth.png", "PIL image, an array or a tensor"),
])
def test_bad_depth_refused_before_compute(tiny_depth, monkeypatch, bad, match):
    monkeypatch.setattr("sdlearn.depth2img.denoise", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ValueError, match=match):
        depth2img(tiny_depth, "a red circle", demo_image("world"), bad)


def test_other_bad_input(tiny_depth, tiny_pipe):
    d = demo_depth("world")
    with pytest.raises(ValueError, match="5 input channels"):
        depth2img(tiny_pipe, "a red circle", demo_image("world"), d)
    with pytest.raises(ValueError, match="strength"):
        depth2img(tiny_depth, "a red circle", demo_image("world"), d, strength=0)
    with pytest.raises(ValueError, match="mode 'CMYK'"):
        depth2img(tiny_depth, "a red circle", Image.new("CMYK", (64, 64)), d)


needs_mini_depth = pytest.mark.skipif(mini_path("depth") is None, reason="sd-mini's depth UNet not bundled")


@needs_mini_depth
def test_mini_depth_keeps_structure_and_follows_the_prompt(quiet_pipeline):
    from sdlearn.mini.scoring import analyse

    pipe = quiet_pipeline("mini-depth")
    assert pipe.unet.config.in_channels == 5 and pipe.unet.dtype == torch.float32
    image, depth = demo_image("world"), demo_depth("world")
    near = depth > 0.5  # the objects stand out of the floor
    for colour in ("red", "green", "yellow"):
        out = depth2img(pipe, f"a {colour} circle on a white background", image, depth, strength=1.0,
                        num_inference_steps=25, generator=make_generator(0))[0]
        reading = analyse(out)
        assert colour in [o["colour"] for o in reading["objects"]], (colour, reading)
        # Structure: the painted object covers the near region of the depth map.
        arr = np.asarray(out, np.float32) / 255
        painted = np.abs(arr - np.asarray(Image.new("RGB", out.size, "white"), np.float32) / 255).sum(-1) > 0.6
        iou = (painted & near).sum() / (painted | near).sum()
        assert iou > 0.6, (colour, iou)
