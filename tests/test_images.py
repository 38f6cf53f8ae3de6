"""Tests for sdlearn.images: loading files and URLs, the bundled demo images, and the checks of
the pictures the image-conditioned tasks take."""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sdlearn import images
from sdlearn.images import DEMO_URLS, as_rgb, check_strength, demo_depth, demo_image, demo_mask, load_image


@pytest.fixture
def rgb_png(tmp_path: Path) -> Path:
    arr = np.zeros((30, 40, 3), dtype=np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red, right half black
    path = tmp_path / "pic.png"
    Image.fromarray(arr).save(path)
    return path


def test_load_local_keeps_size_and_pixels(rgb_png: Path) -> None:
    img = load_image(rgb_png)
    assert img.mode == "RGB" and img.size == (40, 30)
    assert img.getpixel((5, 5)) == (255, 0, 0) and img.getpixel((35, 5)) == (0, 0, 0)
    assert load_image(str(rgb_png)).size == (40, 30)  # str paths work too


def test_load_resizes(rgb_png: Path) -> None:
    assert load_image(rgb_png, size=16).size == (16, 16)
    assert load_image(rgb_png, size=(24, 8)).size == (24, 8)  # (width, height)
    with pytest.raises(ValueError, match="size"):
        load_image(rgb_png, size=(0, 8))


def test_rgba_and_grey_become_rgb(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:4] = (0, 0, 255, 255)  # opaque blue top half; bottom half fully transparent black
    Image.fromarray(rgba).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.mode == "RGB"
    assert img.getpixel((0, 0)) == (0, 0, 255)
    assert img.getpixel((0, 7)) == (255, 255, 255)  # transparent -> white, not black

    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(tmp_path / "g.png")
    grey = load_image(tmp_path / "g.png")
    assert grey.mode == "RGB" and grey.getpixel((3, 3)) == (100, 100, 100)


def test_not_an_image_raises_value_error(tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"
    fake.write_text("this is text, not a PNG")
    with pytest.raises(ValueError, match="notes.png"):
        load_image(fake)


def test_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")


# --- URLs, served from a local http.server -------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    root: Path  # set on a subclass per test

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        if name == "slow.png":
            time.sleep(1.0)  # longer than the client's timeout in the test
            name = "pic.png"
        path = self.root / name.replace("nolength_", "")
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        if not name.startswith("nolength_"):  # HTTP/1.0: without a length the body ends at close
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (size cap, timeout)
            pass

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(rgb_png: Path) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"root": rgb_png.parent})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.block_on_close = False  # don't wait for the deliberately slow handler
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_load_url(server: str, rgb_png: Path) -> None:
    img = load_image(f"{server}/pic.png", size=10)
    assert img.mode == "RGB" and img.size == (10, 10)
    full = load_image(f"{server}/pic.png")
    assert np.array_equal(np.asarray(full), np.asarray(load_image(rgb_png)))


def test_url_size_cap(server: str, rgb_png: Path) -> None:
    n = rgb_png.stat().st_size
    assert load_image(f"{server}/pic.png", max_bytes=n).size == (40, 30)  # exactly at the cap
    with pytest.raises(ValueError, match="max_bytes"):  # refused from Content-Length
        load_image(f"{server}/pic.png", max_bytes=n - 1)
    with pytest.raises(ValueError, match="max_bytes"):  # refused while reading
        load_image(f"{server}/nolength_pic.png", max_bytes=n - 1)
    assert load_image(f"{server}/nolength_pic.png").size == (40, 30)


def test_url_timeout(server: str) -> None:
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="timeout"):
        load_image(f"{server}/slow.png", timeout=0.2)
    assert time.monotonic() - start < 0.9  # gave up before the server answered


def test_url_not_an_image(server: str, tmp_path: Path) -> None:
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ValueError, match="text.png"):
        load_image(f"{server}/text.png")


# --- bundled demo images --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cat", "astronaut"])
def test_demo_photos_are_512_rgb(name: str) -> None:
    img = demo_image(name)
    assert img.mode == "RGB" and img.size == (512, 512)
    assert np.asarray(img).std() > 20  # a real photo, not a blank


def test_demo_default_is_cat() -> None:
    assert np.array_equal(np.asarray(demo_image()), np.asarray(demo_image("cat")))


@pytest.mark.parametrize("name", ["cat", "world"])
def test_demo_masks(name: str) -> None:
    mask = demo_mask(name)
    assert mask.mode == "L" and mask.size == demo_image(name).size
    values = set(np.unique(np.asarray(mask)).tolist())
    assert {0, 255} <= values
    frac = (np.asarray(mask) == 255).mean()
    assert 0.05 < frac < 0.7  # repaints part of the picture, not none or all of it


def test_demo_world() -> None:
    img = demo_image("world")
    assert img.mode == "RGB" and img.size == (128, 128)  # sd-mini v2's native size
    depth = demo_depth("world")
    assert depth.dtype == np.float32 and depth.shape == (128, 128)
    assert depth.min() >= 0.0 and depth.max() <= 1.0 and depth.max() > depth.min()
    # the object (mask) is nearer than the background on average
    obj = np.asarray(demo_mask("world")) == 255
    assert depth[obj].mean() > depth[~obj].mean()


def test_demo_unknown_names_list_valid_ones() -> None:
    with pytest.raises(ValueError, match="astronaut"):
        demo_image("dog")
    with pytest.raises(ValueError, match="cat, world"):
        demo_mask("astronaut")
    with pytest.raises(ValueError, match="world"):
        demo_depth("cat")
    assert set(images.demo_names()) == {"cat", "astronaut", "world"}


def test_demo_files_small_and_licensed() -> None:
    folder = resources.files("sdlearn").joinpath("data", "images")
    pngs = [f for f in folder.iterdir() if f.name.endswith(".png")]
    assert len(pngs) == 6
    assert sum(len(f.read_bytes()) for f in pngs) < 1_000_000
    licence = folder.joinpath("LICENSE.md").read_text()
    for f in pngs:
        assert f.name in licence


def test_demo_urls_are_the_compvis_ones() -> None:
    assert DEMO_URLS["img2img"].endswith("sketch-mountains-input.jpg")
    assert DEMO_URLS["inpaint_image"].endswith("overture-creations-5sI6fQgYIuo.png")
    assert DEMO_URLS["inpaint_mask"].endswith("overture-creations-5sI6fQgYIuo_mask.png")
    prefix = "https://raw.githubusercontent.com/CompVis/"
    assert all(u.startswith(prefix) for u in DEMO_URLS.values())


# --- checks of the pictures img2img, inpainting and depth2img take ---------------------------

def test_as_rgb_rules():
    rgb = Image.new("RGB", (8, 8), (10, 20, 30))
    assert as_rgb(rgb) is rgb
    grey = as_rgb(Image.new("L", (8, 8), 77))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (77, 77, 77)
    clear = as_rgb(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))  # transparent black: white
    assert clear.getpixel((0, 0)) == (255, 255, 255)
    half = as_rgb(Image.new("RGBA", (8, 8), (0, 0, 0, 128)))
    assert half.getpixel((0, 0)) == (127, 127, 127)
    assert as_rgb(np.zeros((8, 8, 3), np.uint8)).size == (8, 8)
    for bad, match in [(Image.new("CMYK", (8, 8)), "mode 'CMYK'"), (Image.new("F", (8, 8)), "mode 'F'"),
                       (np.zeros((8, 8, 3)), "uint8"), (torch.zeros(3, 8, 8), "to_pil"),
                       (np.zeros((8, 8, 2), np.uint8), "shape")]:
        with pytest.raises(ValueError, match=match):
            as_rgb(bad)


@pytest.mark.parametrize("value", [0, 0.0, -0.1, 1.5, math.nan, True, "0.5", None])
def test_check_strength_range(value):
    with pytest.raises(ValueError, match=r"strength must be a number in \(0, 1\]"):
        check_strength(value, 10)
