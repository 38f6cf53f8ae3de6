"""Tests for sdlearn.plotting: to_pil on every input kind, and the show_* helpers."""
from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")  # headless: must come before pyplot is imported anywhere

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from PIL import Image  # noqa: E402

from sdlearn.plotting import show_channels, show_grid, show_image, to_pil  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


# --- to_pil -----------------------------------------------------------------------------------

def test_pil_passthrough_and_rgba() -> None:
    rgb = Image.new("RGB", (4, 3), (1, 2, 3))
    assert to_pil(rgb) is rgb
    rgba = to_pil(Image.new("RGBA", (4, 3), (10, 20, 30, 255)))
    assert rgba.mode == "RGB" and rgba.getpixel((0, 0)) == (10, 20, 30)


def test_numpy_uint8_hwc_and_hw() -> None:
    arr = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    img = to_pil(arr)
    assert img.mode == "RGB" and img.size == (3, 2) and np.array_equal(px(img), arr)
    grey = to_pil(np.array([[0, 255], [7, 9]], dtype=np.uint8))
    assert grey.mode == "L" and np.array_equal(px(grey), [[0, 255], [7, 9]])


def test_numpy_bool_mask() -> None:
    img = to_pil(np.array([[True, False]]))
    assert img.mode == "L" and px(img).tolist() == [[255, 0]]


def test_numpy_float_hwc_and_chw() -> None:
    hwc = np.zeros((2, 5, 3), dtype=np.float32)
    hwc[0, 0] = (0.0, 0.5, 1.0)
    hwc[1, 4] = (2.0, -1.0, 0.25)  # out of range: clipped
    img = to_pil(hwc)
    assert img.size == (5, 2)
    assert px(img)[0, 0].tolist() == [0, 128, 255]
    assert px(img)[1, 4].tolist() == [255, 0, 64]
    chw = to_pil(hwc.transpose(2, 0, 1))
    assert np.array_equal(px(chw), px(img))


def test_tensor_minus_one_to_one() -> None:
    t = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 3).repeat(3, 1, 1)  # (3, 1, 3), min < 0
    img = to_pil(t)
    assert img.mode == "RGB" and img.size == (3, 1)
    assert px(img)[0, :, 0].tolist() == [0, 128, 255]


def test_tensor_zero_to_one_and_batch_of_one() -> None:
    t = torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3).repeat(1, 3, 1, 1)  # (1, 3, 1, 3), min >= 0
    img = to_pil(t)
    assert img.size == (3, 1) and px(img)[0, :, 1].tolist() == [0, 128, 255]


def test_tensor_grey_grad_and_latent() -> None:
    t = torch.zeros(1, 2, 2, requires_grad=True)  # grads must not get in the way
    grey = to_pil(t * 1.0)
    assert grey.mode == "L" and px(grey).tolist() == [[0, 0], [0, 0]]
    with pytest.raises(ValueError, match="show_channels"):
        to_pil(torch.zeros(4, 8, 8))


def test_round_trip_pil_numpy_tensor() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    as_float = arr.astype(np.float32) / 255
    as_tensor = torch.from_numpy(as_float).permute(2, 0, 1) * 2 - 1  # SD's [-1, 1] convention
    for x in (Image.fromarray(arr), arr, as_float, as_float.transpose(2, 0, 1), as_tensor):
        assert np.array_equal(px(to_pil(x)), arr), type(x)


# --- show_* -------------------------------------------------------------------------------------

def test_show_image_makes_or_reuses_axes() -> None:
    ax = show_image(np.zeros((4, 4, 3), dtype=np.uint8), title="black")
    assert isinstance(ax, Axes) and ax.get_title() == "black"
    assert len(ax.images) == 1 and len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0

    _, given = plt.subplots()
    assert show_image(Image.new("L", (4, 4), 255), ax=given) is given
    assert given.images[0].get_clim() == (0, 255)  # grey images use a fixed scale


def test_show_grid_counts_and_titles() -> None:
    pics = [np.full((4, 4, 3), i * 40, dtype=np.uint8) for i in range(5)]
    axes = show_grid(pics, titles=[f"#{i}" for i in range(5)])
    assert isinstance(axes, np.ndarray) and len(axes) == 5
    assert [a.get_title() for a in axes] == [f"#{i}" for i in range(5)]
    assert len(axes[0].figure.axes) == 5  # the 3 empty cells of the 2x4 grid were removed

    assert len(show_grid(pics[:3], ncols=1)) == 3
    assert len(show_grid(torch.rand(3, 3, 8, 8))) == 3  # a batch tensor
    with pytest.raises(ValueError, match="titles"):
        show_grid(pics, titles=["only one"])


def test_show_grid_into_given_axes() -> None:
    _, grid = plt.subplots(2, 2)
    axes = show_grid([np.zeros((4, 4))] * 3, axes=grid)
    assert len(axes) == 3 and axes[0] is grid[0, 0]
    with pytest.raises(ValueError, match="axes"):
        show_grid([np.zeros((4, 4))] * 5, axes=grid)


def test_show_channels() -> None:
    axes = show_channels(torch.randn(4, 8, 8))
    assert len(axes) == 4 and [a.get_title() for a in axes] == [f"channel {i}" for i in range(4)]
    assert len(show_channels(np.random.rand(1, 4, 8, 8))) == 4

    _, row = plt.subplots(1, 4)
    assert list(show_channels(torch.randn(1, 4, 8, 8), ax=row)) == list(row)
    with pytest.raises(ValueError, match="latent"):
        show_channels(torch.randn(8, 8))
