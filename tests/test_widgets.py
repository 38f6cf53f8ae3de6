"""The widgets, driven headlessly: set a control's value, the picture must change."""
import io

import ipywidgets as widgets
import pytest
from PIL import Image

from sdlearn.device import make_generator
from sdlearn.sampling import StepRecorder, sample
from sdlearn.widgets import _png_bytes, guidance_explorer, step_scrubber


def _size(png) -> tuple[int, int]:
    return Image.open(io.BytesIO(bytes(png))).size


def test_png_bytes_scales_up():
    png = _png_bytes(Image.new("RGB", (64, 32), "red"), size=256)
    assert png.startswith(b"\x89PNG") and _size(png) == (256, 128)


def test_guidance_explorer(tiny_pipe):
    w = guidance_explorer(tiny_pipe, prompt="a red circle", num_inference_steps=2, size=128)
    assert isinstance(w, widgets.VBox) and w.renders == 1
    for c in (w.guidance, w.steps, w.seed, w.prompt, w.negative_prompt):
        assert c.continuous_update is False
    first = bytes(w.image.value)  # ipywidgets 8 stores a memoryview, 7 the bytes
    assert first.startswith(b"\x89PNG") and _size(first) == (128, 128)
    # The first picture is exactly what sample() makes with these settings.
    ref = sample(tiny_pipe, "a red circle", num_inference_steps=2, guidance_scale=7.5,
                 generator=make_generator(0))[0]
    assert first == _png_bytes(ref, 128)

    seen = [first]
    for control, value in ((w.seed, 3), (w.steps, 3), (w.prompt, "a blue star"),
                           (w.negative_prompt, "green"), (w.guidance, 1.0)):
        control.value = value
        assert bytes(w.image.value) not in seen, control.description
        seen.append(bytes(w.image.value))
    assert w.renders == 6
    assert "one row per UNet call" in w.info.value  # guidance 1: no classifier-free guidance
    w.negative_prompt.value = "red"  # ...so the negative prompt is not used at all
    assert w.renders == 7 and bytes(w.image.value) == seen[-1]
    w.guidance.value = 1.0  # unchanged value: no observer call, no render
    assert w.renders == 7


def test_guidance_explorer_reports_errors(tiny_pipe, monkeypatch):
    w = guidance_explorer(tiny_pipe, num_inference_steps=1, size=64)
    before = w.image.value

    def fail(*a, **k):
        raise ValueError("height must be a positive multiple of 8")

    monkeypatch.setattr("sdlearn.widgets.sample", fail)
    w.seed.value = 5
    assert w.info.value.startswith("error: height") and w.image.value == before and w.renders == 1


def test_step_scrubber(tiny_pipe):
    rec = StepRecorder()
    sample(tiny_pipe, "a red circle", num_inference_steps=4, generator=make_generator(0), callback=rec)
    w = step_scrubber(tiny_pipe, rec, size=96)
    n = len(rec)  # PNDM: 5 UNet calls for 4 steps (its warm-up repeats one timestep)
    assert w.slider.min == 0 and w.slider.max == n - 1 and w.slider.continuous_update is False
    assert w.decodes == 2 and _size(w.x_t.value) == (96, 96)
    first = (bytes(w.x_t.value), bytes(w.x0.value))
    w.slider.value = n - 1
    assert bytes(w.x_t.value) != first[0] and bytes(w.x0.value) != first[1] and w.decodes == 4
    assert f"step {n}/{n}" in w.info.value and "eps_text" in w.info.value
    w.slider.value = 0  # cached: no new decode
    assert (bytes(w.x_t.value), bytes(w.x0.value)) == first and w.decodes == 4
    with pytest.raises(ValueError, match="empty"):
        step_scrubber(tiny_pipe, StepRecorder())
