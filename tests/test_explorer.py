"""The explorer: its logic (sdlearn.explorer) and its dashboard (sdlearn.widgets.explorer), headless."""
import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdlearn.device import make_generator
import torch

from sdlearn.explorer import Explorer, Settings, size_options, slerp, walk
from sdlearn.img2img import img2img
from sdlearn.sampling import sample
from sdlearn.schedulers import make_scheduler
from sdlearn.widgets import explorer

def _close(a, b) -> bool:
    # The attention recorder computes softmax(QK^T)V explicitly instead of the fused kernel:
    # the same picture up to float rounding, at most 1/255 on a few pixels.
    return int(np.abs(np.asarray(a, int) - np.asarray(b, int)).max()) <= 1


FAST = Settings(prompt="a red circle", num_inference_steps=3, scheduler="ddim")


def test_settings_by_keyword_only():
    with pytest.raises(TypeError):
        Settings("a red circle")  # nine positional fields would be easy to mix up
    assert FAST.but(seed=3) == Settings(prompt="a red circle", num_inference_steps=3, scheduler="ddim", seed=3)


def test_size_options(tiny_pipe):
    assert size_options(tiny_pipe) == [48, 64, 80, 96, 128]  # native 64 = sample_size 8 x factor 8


def test_run_matches_sample_and_leaves_the_pipe_alone(tiny_pipe):
    own = tiny_pipe.scheduler
    ex = Explorer(tiny_pipe)
    r = ex.run(FAST.but(scheduler="euler", seed=4))
    assert tiny_pipe.scheduler is own  # the explorer swaps schedulers on its own pipeline object
    assert ex.pipe.unet is tiny_pipe.unet  # ...over the same modules
    tiny_pipe.scheduler = make_scheduler(own, "euler")
    try:
        ref = sample(tiny_pipe, "a red circle", num_inference_steps=3, generator=make_generator(4))[0]
    finally:
        tiny_pipe.scheduler = own
    assert _close(r.image, ref)
    assert len(r.steps) == 3 and r.unet_passes_per_step == 2 and r.seconds > 0
    assert ex.run(FAST.but(guidance_scale=1.0)).unet_passes_per_step == 1
    assert list(r.maps) == ["a", "red", "circle"] and r.maps["red"].shape == (8, 8)


def test_run_img2img_matches_img2img(tiny_pipe):
    ex = Explorer(tiny_pipe)
    r = ex.run(FAST.but(mode="img2img", strength=0.5, num_inference_steps=4))
    assert len(r.steps) == 2  # int(4 * 0.5) steps run
    tiny_pipe.scheduler, own = make_scheduler(tiny_pipe, "ddim"), tiny_pipe.scheduler
    try:
        # The demo picture is 128 px (sd-mini's size); the explorer runs it at tiny's native 64.
        init = ex.init_image.resize(r.image.size, Image.Resampling.BICUBIC)
        ref = img2img(tiny_pipe, "a red circle", init, strength=0.5, num_inference_steps=4,
                      generator=make_generator(0))[0]
    finally:
        tiny_pipe.scheduler = own
    assert _close(r.image, ref)


@pytest.mark.parametrize("bad, match", [
    (dict(prompt=" "), "prompt is empty"), (dict(scheduler="plms2"), "unknown scheduler"),
    (dict(mode="video"), "mode"), (dict(size=60), "multiple"), (dict(num_inference_steps=0), "steps"),
    (dict(mode="img2img", strength=0.0), "strength"), (dict(mode="img2img", strength=1.5), "strength"),
])
def test_bad_settings_fail_before_compute(tiny_pipe, monkeypatch, bad, match):
    ex = Explorer(tiny_pipe)
    monkeypatch.setattr("sdlearn.explorer.sample", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ValueError, match=match):
        ex.run(FAST.but(**bad))


def _png(value) -> bytes:
    return bytes(value)  # ipywidgets 8 keeps a memoryview, 7 the bytes


def test_dashboard_controls_rerender(tiny_pipe):
    w = explorer(tiny_pipe, FAST.but(scheduler="pndm"))
    assert w.renders == 1 and w.callbacks == 4  # PNDM: 3 steps take 4 UNet calls (warm-up)
    assert w.step.max == 3 and w.step.value == 3 and w.decodes == 2
    assert w.strength.disabled and not w.generate.disabled and "UNet calls" in w.status.value
    seen = [_png(w.image.value)]
    assert Image.open(io.BytesIO(seen[0])).size == (256, 256)
    for control, value in ((w.guidance, 12.0), (w.seed, 1), (w.scheduler, "euler"), (w.prompt, "a blue star"),
                           (w.negative_prompt, "red"), (w.size, 96), (w.mode, "img2img"), (w.strength, 0.9)):
        control.value = value
        assert _png(w.image.value) not in seen, control.description
        seen.append(_png(w.image.value))
    assert w.renders == 9 and not w.strength.disabled
    assert w.callbacks == int(3 * 0.9) == len(w.result.steps)
    assert "not the native" in w.status.value


def test_dashboard_generate_button_and_auto(tiny_pipe, monkeypatch):
    w = explorer(tiny_pipe, FAST)
    w.auto.value = False
    w.seed.value = 9  # no auto-render: nothing happens until Generate
    assert w.renders == 1
    states = []
    real_run = w.explorer.run

    def spy(settings):
        states.append((w.generate.disabled, w.generate.description, w.status.value))
        w.generate.click()  # a second click while running is ignored, not queued
        return real_run(settings)

    monkeypatch.setattr(w.explorer, "run", spy)
    before = _png(w.image.value)
    w.generate.click()
    assert states == [(True, "Generating...", "generating...")]
    assert w.renders == 2 and _png(w.image.value) != before and not w.generate.disabled


def test_dashboard_scrubber_and_token(tiny_pipe):
    w = explorer(tiny_pipe, FAST)
    assert w.token.options == ("a", "red", "circle") and w.token.value == "red"
    att, x0 = _png(w.attention.value), _png(w.x0.value)
    w.token.value = "circle"
    assert _png(w.attention.value) != att and w.renders == 1  # a new map, no new picture
    w.step.value = 0
    assert _png(w.x0.value) != x0 and w.decodes == 4
    w.step.value = 2  # decoded before: cached
    assert _png(w.x0.value) == x0 and w.decodes == 4
    w.prompt.value = "a circle"  # the chosen token survives a new prompt that still has it
    assert w.token.value == "circle" and w.renders == 2


def test_dashboard_shows_what_run_refuses(tiny_pipe, monkeypatch):
    """The dashboard checks nothing itself: Explorer.run is the one place that raises."""
    w = explorer(tiny_pipe, FAST)
    before, calls = _png(w.image.value), []

    def refuse(settings):
        calls.append(settings)
        raise ValueError("no, because")

    monkeypatch.setattr(w.explorer, "run", refuse)
    w.prompt.value = ""  # even an empty prompt goes to run, which says why it is refused
    assert calls == [FAST.but(prompt="", size=64)] and w.status.value == "error: no, because"
    assert _png(w.image.value) == before and not w.generate.disabled and w.renders == 1


def test_dashboard_bad_input_keeps_the_picture(tiny_pipe):
    w = explorer(tiny_pipe, FAST)
    before, renders = _png(w.image.value), w.renders
    w.prompt.value = ""
    assert w.status.value.startswith("error: the prompt is empty")
    w.prompt.value = "a red circle"
    w.mode.value = "img2img"
    w.steps.value = 1
    w.strength.value = 0.5  # 1 x 0.5 rounds to 0 steps
    assert "rounds down to 0" in w.status.value
    assert _png(w.image.value) != before or w.renders > renders  # valid settings rendered meanwhile
    last = _png(w.image.value)
    w.prompt.value = " "
    assert _png(w.image.value) == last and not w.generate.disabled


def _noises(shape=(1, 4, 8, 8)):
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_slerp_ends_are_the_inputs():
    a, b = _noises()
    assert torch.equal(slerp(a, b, 0.0), a)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    assert slerp(a, b, 0.3).shape == a.shape and slerp(a, b, 0.3).dtype == a.dtype


def test_slerp_matches_the_formula_and_the_rotation():
    a, b = _noises()
    x, y = a.double().flatten().numpy(), b.double().flatten().numpy()
    theta = np.arccos(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
    for t in (0.1, 0.5, 0.77, 1.5):  # t outside [0, 1] goes on along the same great circle
        got = slerp(a, b, t).double().flatten().numpy()
        formula = (np.sin((1 - t) * theta) * x + np.sin(t * theta) * y) / np.sin(theta)
        # The same point written as a turn by t*theta in the plane of a and b (Shoemake 1985).
        turn = np.cos(t * theta) * x + np.sin(t * theta) / np.sin(theta) * (y - np.cos(theta) * x)
        assert np.allclose(got, formula, atol=1e-5) and np.allclose(got, turn, atol=1e-5)
        if 0 < t <= 1:  # for equal norms the angle to a grows linearly: t * theta
            eq = slerp(a, b / b.norm() * a.norm(), t).double().flatten().numpy()
            assert abs(np.arccos(eq @ x / np.linalg.norm(eq) / np.linalg.norm(x)) - t * theta) < 1e-4


def test_slerp_keeps_the_norm_and_lerp_shrinks_it():
    a, b = _noises((1, 4, 64, 64))
    b = b / b.norm() * a.norm()  # equal norms
    for t in np.linspace(0, 1, 7):
        assert abs(slerp(a, b, float(t)).norm() / a.norm() - 1) < 1e-5
    # Independent noises are nearly orthogonal: lerp's midpoint is about 1/sqrt(2) as long.
    assert abs(torch.lerp(a, b, 0.5).norm() / a.norm() - 2 ** -0.5) < 0.02


def test_slerp_of_parallel_vectors_is_lerp():
    a, _ = _noises()
    for b in (2 * a, a.clone()):
        for t in (0.0, 0.25, 0.5, 1.0):
            assert torch.allclose(slerp(a, b, t), torch.lerp(a, b, t), atol=1e-6)


def test_walk():
    a, b = _noises()
    w = walk(a, b, 6)
    assert len(w) == 6 and torch.equal(w[0], a) and torch.allclose(w[-1], b, atol=1e-6)
    assert torch.allclose(w[2], slerp(a, b, 0.4))
    assert all(torch.allclose(p, torch.lerp(a, b, k / 5)) for k, p in enumerate(walk(a, b, 6, how="lerp")))


@pytest.mark.parametrize("call, match", [
    (lambda a, b: slerp(a, b[..., :4], 0.5), "one shape"), (lambda a, b: slerp(a, b, float("nan")), "finite"),
    (lambda a, b: slerp(a, torch.zeros_like(b), 0.5), "non-zero"), (lambda a, b: slerp(a.numpy(), b, 0.5), "tensors"),
    (lambda a, b: walk(a, b, 1), "n >= 2"), (lambda a, b: walk(a, b, 4, how="cubic"), "how"),
])
def test_slerp_and_walk_refuse_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(*_noises())


def test_notebook_shows_a_screenshot_of_the_dashboard():
    """Readers without a kernel see a picture of the real dashboard (tests/test_explorer_browser.py
    takes it in JupyterLab + Chromium and embeds it), not just the widget's `VBox(...)` text."""
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / "10_explorer.ipynb").read_text("utf-8"))
    cells = [c for c in nb["cells"] if c["cell_type"] == "markdown"
             and "attachment:10_dashboard.png" in "".join(c["source"])]
    assert len(cells) == 1
    data = base64.b64decode(cells[0]["attachments"]["10_dashboard.png"]["image/png"])
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(data) < 150_000, len(data)
    im = Image.open(io.BytesIO(data))
    im.verify()  # a whole, valid PNG
    im = Image.open(io.BytesIO(data))
    assert im.format == "PNG" and 600 <= im.width <= 1400 and 300 <= im.height <= 1000, im.size
    pix = np.asarray(im.convert("RGB"), np.float32)
    assert pix.std() > 20  # not a blank page: controls, the picture and the maps
