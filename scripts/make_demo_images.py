"""Build the small demo images bundled with sdlearn (run once; the outputs are committed).

The course runs offline, so instead of downloading the CompVis sample pictures (see
``sdlearn.images.DEMO_URLS``) we ship a few small pictures with clear licences:

* ``cat.png`` / ``astronaut.png``: scikit-image's bundled samples ``chelsea`` (CC0) and
  ``astronaut`` (NASA, public domain), centre-cropped and resized to 512x512.
* ``cat_mask.png``: our own inpainting mask (white = repaint) over the cat's eyes and nose.
* ``world_scene.png`` / ``world_mask.png`` / ``world_depth.png``: one 128x128 scene of
  ``sdlearn.mini.world`` (the sd-mini training world) at sd-mini's native size, drawn by the
  world's own renderer, for cheap img2img, inpainting and depth demos.

Usage: ``python scripts/make_demo_images.py`` from the repository root.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # so the script works before sdlearn is pip-installed
from sdlearn.mini import world  # noqa: E402

OUT = ROOT / "sdlearn" / "data" / "images"
SIZE = 512
# Centre crop of chelsea is a close-up of the face: this ellipse covers both eyes and the nose
# while leaving a ring of fur as context for the inpainting model. Placed by looking at it.
CAT_MASK_BOX = (70, 110, 480, 470)
# One flat object whose caption names its colour, shape, position and background, written the
# way world.caption_for writes them (the same scene the course used at 64 px with world v1).
WORLD_SCENE = world.Scene([world.WorldObject("circle", "blue", x=0.72, y=0.5, r=0.2)], "yellow",
                          caption="a blue circle on the right on a yellow background")
WORLD_SIZE = 128  # sd-mini's native size


def centre_square(arr: np.ndarray, size: int = SIZE) -> Image.Image:
    """Crop the largest centred square and resize it to ``size`` x ``size``."""
    h, w = arr.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = Image.fromarray(arr[top:top + s, left:left + s]).convert("RGB")
    return img if s == size else img.resize((size, size), Image.Resampling.LANCZOS)


def save(img: Image.Image, name: str) -> None:
    path = OUT / name
    img.save(path, optimize=True)
    print(f"{path.relative_to(ROOT)}: {img.mode} {img.size}, {path.stat().st_size / 1024:.1f} KiB")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    save(centre_square(skimage.data.chelsea()), "cat.png")
    save(centre_square(skimage.data.astronaut()), "astronaut.png")

    mask = Image.new("L", (SIZE, SIZE), 0)
    ImageDraw.Draw(mask).ellipse(CAT_MASK_BOX, fill=255)
    save(mask, "cat_mask.png")

    s = world.render(WORLD_SCENE, size=WORLD_SIZE)
    assert s.scene.objects[0].position == "right" and s.scene.objects[0].size is None  # as captioned
    print(f"world caption: {s.caption!r}")
    save(Image.fromarray(s.image).convert("RGB"), "world_scene.png")
    save(Image.fromarray(s.mask).convert("L"), "world_mask.png")
    # depth is float32 in [0, 1]; 8 bits is plenty for a toy depth map
    save(Image.fromarray(np.round(s.depth * 255).astype(np.uint8)), "world_depth.png")


if __name__ == "__main__":
    main()
