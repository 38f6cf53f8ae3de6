"""Depth-to-image by hand vs StableDiffusionDepth2ImgPipeline; bad depth maps refused before compute."""
import numpy as np
import pytest
import torch
from PIL import Image

from sdlearn.depth2img import as_depth, depth2img, depth_condition, near_region, structure_iou
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


def test_every_form_gives_the_same_unet_channel():
    """Only relative depth counts: the float map, its tensor and its 8-bit picture (the bundled
    map is stored with 8-bit precision) give the same fifth channel, as does any affine rescale."""
    d = demo_depth("world")
    reference = depth_condition(as_depth(d), (16, 16))
    for form in (torch.from_numpy(d)[None], Image.fromarray((d * 255).round().astype(np.uint8)), d * 37.0 + 5.0):
        assert torch.allclose(depth_condition(as_depth(form), (16, 16)), reference, atol=1e-5)



@pytest.mark.parametrize("bad, match", [
    # the cases notebook 08 used to show, with their messages
    (Image.new("RGB", (64, 64)), "the depth map has mode 'RGB': it must be single-channel .* not a depth map"),
    (np.zeros((64, 64, 3), np.float32), "single-channel"),
    (np.random.rand(32, 64).astype(np.float32), "64x32 but the picture is 128x128: not the same aspect"),
    (np.random.rand(64, 32).astype(np.float32), "32x64 but the picture is 128x128: not the same aspect ratio"),
    (np.ones((64, 64), np.float32), r"the depth map is flat \(max = min\)"),
    (np.full((64, 64), np.nan, np.float32), "the depth map has NaN or infinite values"),
    ("depth.png", "PIL image, an array or a tensor"),
])
def test_bad_depth_refused_before_compute(tiny_depth, monkeypatch, bad, match, count_calls):
    monkeypatch.setattr("sdlearn.depth2img.denoise", lambda *a, **k: pytest.fail("computed"))
    with count_calls(tiny_depth) as calls, pytest.raises(ValueError, match=match):
        depth2img(tiny_depth, "a red circle", demo_image("world"), bad)
    assert not calls


def test_other_bad_input_refused_before_compute(tiny_depth, tiny_pipe, count_calls):
    d = demo_depth("world")
    for pipe, kw, match in [
        (tiny_pipe, {}, r"depth2img needs a depth-conditioned UNet \(5 input channels\); this one has 4"),
        (tiny_depth, {"strength": 0}, r"strength must be a number in \(0, 1\]"),
        (tiny_depth, {"strength": 0.0}, r"strength must be a number in \(0, 1\]"),
        (tiny_depth, {"image": Image.new("CMYK", (64, 64))}, "image has mode 'CMYK'"),
    ]:
        with count_calls(pipe) as calls, pytest.raises(ValueError, match=match):
            depth2img(pipe, **{"prompt": "a red circle", "image": demo_image("world"), "depth_map": d, **kw})
        assert not calls, (kw, match)


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


def test_depth_condition_is_prepare_depth_map(tiny_depth):
    """``depth_condition`` is the pipeline's ``prepare_depth_map`` for a supplied map."""
    depth = torch.from_numpy(demo_depth("world"))[None] * 3.0 + 1.0  # any scale
    ref = tiny_depth.prepare_depth_map(torch.zeros(1, 3, 128, 128), depth, 1, False, torch.float32,
                                       torch.device("cpu"))
    assert torch.allclose(depth_condition(depth, tuple(ref.shape[-2:])), ref, atol=1e-6)


def test_near_region_and_structure_iou():
    """The near region is the pixels above `near` of the map's min-max range, whatever its scale;
    a picture whose foreground is exactly that region scores IoU 1; read the wrong way round, 0."""
    d = np.zeros((32, 32), np.float32)
    d[8:20, 4:14] = 1.0
    d[0, 0] = 0.4  # below 0.45 of the range: not near
    region = near_region(d)
    assert region.sum() == 12 * 10 and region[8:20, 4:14].all()
    assert np.array_equal(near_region(3 * d + 7), region)  # a positive affine rescale: the same
    picture = np.full((32, 32, 3), 20, np.uint8)
    picture[region] = 220
    assert structure_iou(Image.fromarray(picture), d) == 1.0
    assert structure_iou(Image.fromarray(picture), d.max() - d) == 0.0  # the map read the wrong way round
