"""World v1: the captioned world the *shipped* sd-mini v1 was trained on, frozen as it was.

The recipe (``sdlearn.mini.recipe``) now draws world v2 (``sdlearn.mini.world``); this copy stays
only while the bundled weights are v1, so that the course judges them on the world they know.
It goes when sd-mini v2 ships.

Every sample is a small RGB picture of one or two flat-coloured shapes on a coloured background,
with a caption, the object mask (for inpainting), a depth map (for depth2img) and the attributes
that drew it (for scoring). Everything is a pure function of ``(seed, index)``, so a held-out seed
gives held-out prompts and the same index always gives the same picture.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
# Saturated, well separated colours: the scorer assigns a pixel to the nearest of these.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (245, 225, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "purple": (140, 40, 180),
    "pink": (245, 130, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)
SIZES: dict[str, float] = {"small": 0.16, "big": 0.27}  # radius as a fraction of the image side
POSITIONS: dict[str, tuple[float, float]] = {  # object centre as a fraction of (width, height)
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "centre": (0.5, 0.5),
}
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "centre": "in the centre"}


@dataclass
class WorldObject:
    shape: str
    colour: str
    size: str
    position: str


@dataclass
class Scene:
    """What a sample shows; ``render`` turns it into pixels."""

    objects: list[WorldObject]
    background: str
    caption: str = ""
    mentions_background: bool = field(default=False)


@dataclass
class Sample:
    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    mask: np.ndarray  # (H, W) uint8, 255 where any object is
    depth: np.ndarray  # (H, W) float32 in [0, 1], 1 = near
    scene: Scene


def _shape_polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]] | None:
    if shape == "square":
        s = r * 0.88  # similar area to the circle
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":  # pointing up, centred on its bounding box
        h = r * 1.1
        return [(cx, cy - h), (cx + h * 1.05, cy + h * 0.85), (cx - h * 1.05, cy + h * 0.85)]
    if shape == "star":
        pts = []
        for k in range(10):
            rad = r * (1.1 if k % 2 == 0 else 0.45)
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        return pts
    return None  # circle


def _draw(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    poly = _shape_polygon(shape, cx, cy, r)
    if poly is None:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        draw.polygon(poly, fill=fill)


def _dome(shape: str, cx: float, cy: float, r: float, size: int) -> np.ndarray:
    """A height profile for one object: domes for circles, plateaus for flat shapes."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) / max(r, 1e-6)
    if shape == "circle":
        return np.sqrt(np.clip(1 - d**2, 0, 1))
    return np.clip(1.2 - 0.4 * d, 0.5, 1.0)


def caption_for(scene: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    """Write a caption for ``scene`` from a few templates; returns (caption, mentions_background)."""

    def phrase(o: WorldObject, with_pos: bool) -> str:
        words = []
        if rng.random() < 0.35:
            words.append(o.size)
        words += [o.colour, o.shape]
        words.insert(0, _article(words[0]))
        if with_pos:
            words.append(POSITION_PHRASES[o.position])
        return " ".join(words)

    if len(scene.objects) == 1:
        body = phrase(scene.objects[0], with_pos=rng.random() < 0.5)
    else:
        body = " and ".join(phrase(o, with_pos=True) for o in scene.objects)
    mention_bg = rng.random() < 0.6
    style = rng.integers(4)
    if mention_bg:
        body = (f"{body} on {_article(scene.background)} {scene.background} background" if style != 3
                else f"{body}, {scene.background} background")
    prefix = ("", "", "a picture of ", "an image of ")[rng.integers(4)]
    if prefix:
        body = prefix + body
    return body, mention_bg


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def random_scene(rng: np.random.Generator, two_object_prob: float = 0.2) -> Scene:
    """Draw the attributes of one scene (the caption is written from them)."""
    background = COLOURS[rng.integers(len(COLOURS))]
    n = 2 if rng.random() < two_object_prob else 1
    if n == 1:
        positions = [list(POSITIONS)[rng.integers(len(POSITIONS))]]
    else:
        positions = [("left", "right"), ("top", "bottom")][rng.integers(2)]
    used = {background}
    objects = []
    for pos in positions:
        colour = rng.choice([c for c in COLOURS if c not in used])
        used.add(colour)
        shape = SHAPES[rng.integers(len(SHAPES))]
        size = "small" if n == 2 else list(SIZES)[rng.integers(len(SIZES))]
        objects.append(WorldObject(shape, str(colour), size, pos))
    scene = Scene(objects, background)
    scene.caption, scene.mentions_background = caption_for(scene, rng)
    return scene


def render(scene: Scene, size: int = 64, rng: np.random.Generator | None = None,
           supersample: int = 4) -> Sample:
    """Draw ``scene`` at ``size``x``size`` (anti-aliased by supersampling).

    A small random jitter of position and radius (from ``rng``) keeps the world from being a
    lookup table; pass ``rng=None`` for the canonical layout.
    """
    big = size * supersample
    img = Image.new("RGB", (big, big), PALETTE[scene.background])
    mask = Image.new("L", (big, big), 0)
    d_img, d_mask = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    # Depth: the floor recedes towards the top (far = 0) and objects stand out (near = 1).
    depth = np.tile(np.linspace(0.0, 0.3, size, dtype=np.float32)[:, None], (1, size))
    for o in scene.objects:
        fx, fy = POSITIONS[o.position]
        r = SIZES[o.size]
        if rng is not None:
            fx += rng.uniform(-0.05, 0.05)
            fy += rng.uniform(-0.05, 0.05)
            r *= rng.uniform(0.9, 1.1)
        cx, cy, rr = fx * big, fy * big, r * big
        _draw(d_img, o.shape, cx, cy, rr, PALETTE[o.colour])
        _draw(d_mask, o.shape, cx, cy, rr, 255)
        one = Image.new("L", (big, big), 0)
        _draw(ImageDraw.Draw(one), o.shape, cx, cy, rr, 255)
        inside = np.asarray(one.resize((size, size), Image.BOX), dtype=np.float32) / 255.0
        s = size / big
        height = 0.55 + 0.45 * _dome(o.shape, cx * s, cy * s, rr * s, size)
        depth = depth * (1 - inside) + height * inside
    image = np.asarray(img.resize((size, size), Image.BOX), dtype=np.uint8)
    m = np.asarray(mask.resize((size, size), Image.BOX), dtype=np.uint8)
    return Sample(image, scene.caption, np.where(m >= 128, 255, 0).astype(np.uint8), depth, scene)


def sample(seed: int, index: int, size: int = 64) -> Sample:
    """The ``index``-th sample of the world drawn from ``seed`` (pure function of both).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    rng = np.random.default_rng([seed, index])
    return render(random_scene(rng), size=size, rng=rng)


def batch(seed: int, start: int, n: int, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """``n`` consecutive samples as a (n, H, W, 3) uint8 array and their captions.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    samples = [sample(seed, start + i, size) for i in range(n)]
    return np.stack([s.image for s in samples]), [s.caption for s in samples]
