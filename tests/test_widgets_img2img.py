"""The img2img strength explorer, driven headlessly: set a control, the picture must change."""
import io

import ipywidgets as widgets
from PIL import Image

from sdlearn.device import make_generator
from sdlearn.images import demo_image
from sdlearn.img2img import img2img
from sdlearn.widgets import _png_bytes, strength_explorer


def _size(png) -> tuple[int, int]:
    return Image.open(io.BytesIO(bytes(png))).size


def test_strength_explorer(tiny_pipe):
    world = demo_image("world")
    w = strength_explorer(tiny_pipe, world, prompt="a red circle", strength=0.6,
                          num_inference_steps=10, size=128)
    assert isinstance(w, widgets.VBox) and w.renders == 1
    for c in (w.strength, w.steps, w.seed, w.prompt):
        assert c.continuous_update is False
    assert bytes(w.input.value) == _png_bytes(world, 128)
    first = bytes(w.image.value)  # ipywidgets 8 stores a memoryview, 7 the bytes
    assert _size(first) == (128, 128)
    ref = img2img(tiny_pipe, "a red circle", world, strength=0.6, num_inference_steps=10,
                  generator=make_generator(0))[0]
    assert first == _png_bytes(ref, 128)  # exactly img2img's picture
    assert "ran 6 of 10 steps" in w.info.value and "skipped 4" in w.info.value

    seen = [first]
    for control, value in ((w.strength, 0.9), (w.seed, 3), (w.steps, 12), (w.prompt, "a blue star")):
        control.value = value
        assert bytes(w.image.value) not in seen, control.description
        seen.append(bytes(w.image.value))
    assert w.renders == 5


def test_strength_explorer_reports_bad_settings(tiny_pipe):
    w = strength_explorer(tiny_pipe, demo_image("world"), num_inference_steps=4, size=64)
    before = bytes(w.image.value)
    w.strength.value = 0.1  # 0.1 x 4 steps rounds down to no step at all
    assert w.info.value.startswith("error: strength") and "rounds down to 0" in w.info.value
    assert bytes(w.image.value) == before and w.renders == 1
