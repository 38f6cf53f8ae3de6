"""A procedural captioned world: the training data of sd-mini (world v2).

Every sample is a small RGB picture of one to three coloured shapes on a background, with a
caption, the object mask (for inpainting), a depth map (for depth2img) and the attributes that
drew it (for scoring). Everything is a pure function of ``(seed, index)``, so a held-out seed
gives held-out prompts and the same index always gives the same picture.

Like web captions, and unlike world v1, a caption does not fix the picture:

* it leaves attributes out: colour, size, position, background, now and then the shape itself
  ("something red", "a circle", "a picture on a striped background");
* much of what is drawn is never named: the background's style (flat, gradient, stripes, dots,
  checks), each object's finish (flat, outlined, shaded), its exact size, place and a small
  rotation, and small distractor objects.

So a prompt leaves the model real choices (diversity across seeds), and the conditional and
unconditional predictions differ only where the caption speaks, as in Stable Diffusion's data.
``HELD_OUT_SHAPE`` is drawable but never drawn by ``sample``: notebook 12 teaches it to sd-mini.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond")
HELD_OUT_SHAPE = "heart"  # never in a training picture or caption; notebook 12 teaches it
ALL_SHAPES: tuple[str, ...] = SHAPES + (HELD_OUT_SHAPE,)
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
BACKGROUND_STYLES: tuple[str, ...] = ("flat", "gradient", "stripes", "dots", "checks")
STYLE_WORDS = {"flat": "plain", "gradient": "gradient", "stripes": "striped", "dots": "dotted",
               "checks": "checkered"}
FINISHES: tuple[str, ...] = ("flat", "outline", "shaded")
POSITIONS: tuple[str, ...] = ("left", "right", "top", "bottom", "centre")
POSITION_PHRASES = {"left": "on the left", "right": "on the right", "top": "at the top",
                    "bottom": "at the bottom", "centre": "in the centre"}
SIZE_WORDS = ("small", "big")
SMALL_BELOW, BIG_ABOVE = 0.17, 0.23  # radius (fraction of the side) a size word may name


def _tone(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """The second tone of a colour (patterns, outlines, shading): darker, else lighter, else (for
    white and black, which have no room on the grey axis) bluish, as far from the colour as
    possible while its nearest palette colour is clearly still the colour itself."""
    c = np.array(rgb, np.float32)
    pal = np.array(list(PALETTE.values()), np.float32)
    own = int(np.argmin(((pal - c) ** 2).sum(1)))
    for target in (np.zeros(3), np.full(3, 255.0), np.array([110.0, 130.0, 255.0])):
        for f in (0.45, 0.4, 0.35, 0.3, 0.25, 0.2):
            t = c * (1 - f) + target * f
            d2 = ((pal - t) ** 2).sum(1)
            # a clear margin to the next palette colour, not just the nearest
            if int(np.argmin(d2)) == own and np.sort(d2)[1] > 1.8 * d2[own] and np.abs(t - c).max() >= 40:
                return tuple(int(round(v)) for v in t)
    raise AssertionError(f"no tone for {rgb}")  # cannot happen for PALETTE (a test checks)


TONES: dict[str, tuple[int, int, int]] = {name: _tone(rgb) for name, rgb in PALETTE.items()}


@dataclass
class WorldObject:
    """One drawn object: centre (x, y) and radius r as fractions of the side, angle in degrees.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """

    shape: str
    colour: str
    x: float = 0.5
    y: float = 0.5
    r: float = 0.2
    angle: float = 0.0
    finish: str = "flat"

    @property
    def position(self) -> str | None:
        return position_word(self.x, self.y)

    @property
    def size(self) -> str | None:
        return "small" if self.r < SMALL_BELOW else "big" if self.r > BIG_ABOVE else None


@dataclass
class Scene:
    """What a sample shows; ``render`` turns it into pixels.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """

    objects: list[WorldObject]
    background: str
    style: str = "flat"
    distractors: list[WorldObject] = field(default_factory=list)
    caption: str = ""


@dataclass
class Sample:
    """A rendered scene: the picture, its caption, the captioned objects' mask and the depth map.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """

    image: np.ndarray  # (H, W, 3) uint8
    caption: str
    mask: np.ndarray  # (H, W) uint8, 255 where a (captionable) object is
    depth: np.ndarray  # (H, W) float32 in [0, 1], 1 = near
    scene: Scene


def position_word(x: float, y: float) -> str | None:
    """The word a caption may use for a centre at (x, y), or None where no word is clear-cut
    (the diagonals and the band between the centre and a side).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) < 0.08:
        return "centre"
    if abs(dx) > abs(dy) + 0.1 and abs(dx) > 0.12:
        return "left" if dx < 0 else "right"
    if abs(dy) > abs(dx) + 0.1 and abs(dy) > 0.12:
        return "top" if dy < 0 else "bottom"
    return None


# ----------------------------------------------------------------------------- geometry
def _unit_outline(shape: str) -> list[tuple[float, float]]:
    """The shape's outline for centre (0, 0), radius 1, upright; y grows downwards."""
    if shape == "circle":
        return [(math.cos(a), math.sin(a)) for a in np.linspace(0, 2 * math.pi, 48, endpoint=False)]
    if shape == "square":
        s = 0.88  # about the circle's area
        return [(-s, -s), (s, -s), (s, s), (-s, s)]
    if shape == "diamond":
        d = 1.25
        return [(0, -d), (d, 0), (0, d), (-d, 0)]
    if shape == "triangle":  # pointing up
        h = 1.1
        return [(0, -h), (h * 1.05, h * 0.85), (-h * 1.05, h * 0.85)]
    if shape == "star":
        return [((1.1 if k % 2 == 0 else 0.45) * math.cos(-math.pi / 2 + k * math.pi / 5),
                 (1.1 if k % 2 == 0 else 0.45) * math.sin(-math.pi / 2 + k * math.pi / 5)) for k in range(10)]
    if shape == "cross":
        a, e = 0.36, 1.05  # arm half-width, arm reach
        return [(-a, -e), (a, -e), (a, -a), (e, -a), (e, a), (a, a), (a, e), (-a, e), (-a, a),
                (-e, a), (-e, -a), (-a, -a)]
    if shape == "heart":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
        return list(zip(x / 15.0, (y + 2.5) / 15.0))
    raise ValueError(f"unknown shape {shape!r}; known: {', '.join(ALL_SHAPES)}")


def outline(shape: str, cx: float, cy: float, r: float, angle: float = 0.0) -> list[tuple[float, float]]:
    """Polygon of ``shape`` centred at (cx, cy) with radius ``r`` (pixels), turned by ``angle``
    degrees clockwise.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in _unit_outline(shape)]


def _background(scene: Scene, size: int, rng: np.random.Generator | None) -> Image.Image:
    """The background at ``size`` px: base colour, with its tone where the style puts it."""
    base, tone = PALETTE[scene.background], TONES[scene.background]
    r = rng if rng is not None else np.random.default_rng(0)
    period = r.uniform(0.14, 0.22)  # 9-14 px at 64: wide enough for an 8x8-cell latent grid
    phase = r.uniform(0, 1)
    u = (np.arange(size, dtype=np.float32) + 0.5) / size
    if scene.style == "gradient":  # base on one side, tone on the other
        t = u if r.random() < 0.5 else 1 - u
        t = np.broadcast_to(t[None, :] if r.random() < 0.5 else t[:, None], (size, size))
        rgb = np.array(base, np.float32) * (1 - t[..., None]) + np.array(tone, np.float32) * t[..., None]
        return Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8))
    band = (u / period + phase) % 1.0 < 0.5  # (size,) alternating halves of each period
    if scene.style == "stripes":
        on = np.broadcast_to(band[:, None] if r.random() < 0.5 else band[None, :], (size, size))
    elif scene.style == "checks":
        on = band[:, None] ^ band[None, :]
    elif scene.style == "dots":
        g = (u / period + phase) % 1.0 - 0.5
        on = g[:, None] ** 2 + g[None, :] ** 2 < 0.25 ** 2
    else:
        return Image.new("RGB", (size, size), base)
    img = Image.new("RGB", (size, size), base)
    img.paste(tone, mask=Image.fromarray(on.astype(np.uint8) * 255))
    return img


def _paint(img: Image.Image, o: WorldObject) -> Image.Image:
    """Draw ``o`` on ``img`` (in place) with its finish; returns its coverage mask ("L")."""
    big = img.width
    poly = outline(o.shape, o.x * big, o.y * big, o.r * big, o.angle)
    cov = Image.new("L", img.size, 0)
    ImageDraw.Draw(cov).polygon(poly, fill=255)
    col, tone = PALETTE[o.colour], TONES[o.colour]
    if o.finish == "shaded":  # light from the top left: the tone on the far side, in its box only
        x0, y0 = max(0, int((o.x - 1.3 * o.r) * big)), max(0, int((o.y - 1.3 * o.r) * big))
        x1, y1 = min(big, int((o.x + 1.3 * o.r) * big) + 1), min(big, int((o.y + 1.3 * o.r) * big) + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32) / big
        w = np.clip(((xx - o.x) + (yy - o.y)) / (2.4 * o.r) + 0.5, 0, 1)[..., None]
        patch = np.array(col, np.float32) * (1 - w) + np.array(tone, np.float32) * w
        img.paste(Image.fromarray(patch.astype(np.uint8)), (x0, y0), cov.crop((x0, y0, x1, y1)))
    elif o.finish == "outline":  # a rim of the tone, about 1.5 px at 64
        ImageDraw.Draw(img).polygon(poly, fill=tone)
        inner = outline(o.shape, o.x * big, o.y * big, max(o.r * big - 1.6 * big / 64, 1.0), o.angle)
        ImageDraw.Draw(img).polygon(inner, fill=col)
    else:
        ImageDraw.Draw(img).polygon(poly, fill=col)
    return cov


def render(scene: Scene, size: int = 64, rng: np.random.Generator | None = None,
           supersample: int = 4) -> Sample:
    """Draw ``scene`` at ``size`` x ``size`` (anti-aliased by supersampling). ``rng`` draws the
    pattern's period and phase and the gradient's direction (None: fixed ones).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    big = size * supersample
    img = _background(scene, big, rng)
    mask = Image.new("L", (big, big), 0)
    # Depth: the floor recedes towards the top (far = 0) and objects stand out (near = 1).
    depth = np.tile(np.linspace(0.0, 0.3, size, dtype=np.float32)[:, None], (1, size))
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    for k, o in enumerate(scene.distractors + scene.objects):
        cov = _paint(img, o)
        if k >= len(scene.distractors):  # the mask holds the captioned objects only
            mask.paste(255, mask=cov)
        inside = np.asarray(cov.resize((size, size), Image.BOX), np.float32) / 255
        d = np.sqrt((xx - o.x) ** 2 + (yy - o.y) ** 2) / max(o.r, 1e-6)
        dome = np.sqrt(np.clip(1 - d ** 2, 0, 1)) if o.shape == "circle" else np.clip(1.2 - 0.4 * d, 0.5, 1)
        depth = depth * (1 - inside) + (0.55 + 0.45 * dome) * inside
    image = np.asarray(img.resize((size, size), Image.BOX), np.uint8)
    m = np.asarray(mask.resize((size, size), Image.BOX), np.uint8)
    return Sample(image, scene.caption, np.where(m >= 128, 255, 0).astype(np.uint8), depth, scene)


# ----------------------------------------------------------------------------- scenes and captions
def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _place(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """Centres and radii of ``n`` objects that neither overlap nor leave the picture."""
    if n == 1:
        r = rng.uniform(0.12, 0.30)
        lo, hi = 1.25 * r + 0.02, 1 - 1.25 * r - 0.02
        return [(rng.uniform(lo, hi), rng.uniform(lo, hi), r)]
    horizontal = rng.random() < 0.5
    # Slot spacing minus jitter leaves room for the widest reach (a diamond: 1.25 r) of each.
    r_lo, r_hi, jitter = (0.1, 0.15, 0.04) if n == 2 else (0.09, 0.11, 0.02)
    out = []
    for k in range(n):  # one slot per object along a row or a column, jittered within it
        r = rng.uniform(r_lo, r_hi)
        along = (k + 0.5) / n + rng.uniform(-jitter, jitter)
        across = 0.5 + rng.uniform(-0.08, 0.08)
        along = float(np.clip(along, 1.25 * r + 0.02, 1 - 1.25 * r - 0.02))
        out.append((along, across, r) if horizontal else (across, along, r))
    return out


def _distractors(rng: np.random.Generator, objects: list[WorldObject], background: str) -> list[WorldObject]:
    """0-2 small unmentioned objects (radius 2-3 px at 64), away from the captioned ones."""
    out: list[WorldObject] = []
    if rng.random() >= 0.3:
        return out
    for _ in range(int(rng.integers(1, 3))):
        for _try in range(20):
            x, y, r = rng.uniform(0.07, 0.93), rng.uniform(0.07, 0.93), rng.uniform(0.035, 0.05)
            if all(math.hypot(x - o.x, y - o.y) > o.r * 1.25 + r + 0.04 for o in objects + out):
                colour = str(rng.choice([c for c in COLOURS if c != background]))
                out.append(WorldObject(SHAPES[rng.integers(len(SHAPES))], colour, x, y, r,
                                       float(rng.uniform(-15, 15))))
                break
    return out


def random_scene(rng: np.random.Generator) -> Scene:
    """Draw the attributes of one scene and write its caption.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    background = COLOURS[rng.integers(len(COLOURS))]
    style = BACKGROUND_STYLES[0] if rng.random() < 0.4 else BACKGROUND_STYLES[1 + rng.integers(4)]
    n = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
    objects = []
    for x, y, r in _place(rng, n):
        colour = str(rng.choice([c for c in COLOURS if c != background]))
        finish = FINISHES[0] if rng.random() < 0.6 else FINISHES[1 + rng.integers(2)]
        objects.append(WorldObject(SHAPES[rng.integers(len(SHAPES))], colour, float(x), float(y),
                                   float(r), float(rng.uniform(-15, 15)), finish))
    scene = Scene(objects, background, style, _distractors(rng, objects, background))
    scene.caption = caption_for(scene, rng)
    return scene


def _object_phrase(o: WorldObject, rng: np.random.Generator, many: bool) -> str:
    say_colour = rng.random() >= 0.12
    say_shape = rng.random() >= 0.1 or not say_colour
    words = []
    if o.size is not None and rng.random() < 0.35:
        words.append(o.size)
    if say_colour:
        words.append("grey" if o.colour == "gray" and rng.random() < 0.3 else o.colour)
    if say_shape:
        words.append(o.shape)
    elif len(words) == 1 and rng.random() < 0.5:
        return "something " + words[0] + _position_phrase(o, rng, many)
    else:
        words.append(("shape", "thing", "object")[rng.integers(3)])
    return f"{_article(words[0])} {' '.join(words)}" + _position_phrase(o, rng, many)


def _position_phrase(o: WorldObject, rng: np.random.Generator, many: bool) -> str:
    word = o.position
    if word is None or rng.random() >= (0.85 if many else 0.5):
        return ""
    phrase = POSITION_PHRASES[word]
    if word == "centre" and rng.random() < 0.4:
        phrase = ("in the center", "in the middle")[rng.integers(2)]
    return " " + phrase


def _background_phrase(scene: Scene, rng: np.random.Generator) -> str:
    say_colour = rng.random() < 0.5
    say_style = rng.random() < (0.5 if scene.style != "flat" else 0.15)
    if not (say_colour or say_style):
        return ""
    colour = scene.background if say_colour else ""
    style = STYLE_WORDS[scene.style] if say_style else ""
    words = " ".join(w for w in (style, colour) if w)
    if say_style and scene.style == "dots" and say_colour and rng.random() < 0.5:
        return f" on {_article(colour)} {colour} background with dots"
    return f" on {_article(words)} {words} background"


def caption_for(scene: Scene, rng: np.random.Generator) -> str:
    """Write a caption for ``scene`` that names some of what is drawn, never anything that isn't.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    many = len(scene.objects) > 1
    bg = _background_phrase(scene, rng)
    if rng.random() < 0.03 and bg:  # no object named at all
        return ("a picture", "an image", "a drawing")[rng.integers(3)] + bg
    phrases = [_object_phrase(o, rng, many) for o in scene.objects]
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    prefix = ("", "", "", "a picture of ", "an image of ", "a drawing of ")[rng.integers(6)]
    return prefix + body + bg


def sample(seed: int, index: int, size: int = 64) -> Sample:
    """The ``index``-th sample of the world drawn from ``seed`` (pure function of both).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    rng = np.random.default_rng([seed, index])
    return render(random_scene(rng), size=size, rng=rng)


def _images(args: tuple[int, int, int, int]) -> np.ndarray:
    seed, start, n, size = args
    return np.stack([sample(seed, i, size).image for i in range(start, start + n)])


def pictures(seed: int, n: int, size: int = 64, processes: int = 2, chunk: int = 500) -> np.ndarray:
    """Samples ``0..n-1`` of ``seed`` as one (n, H, W, 3) uint8 array, rendered by ``processes``
    worker processes: the training stages draw tens of thousands, and rendering them once, on
    every core, costs less than rendering them inside the training loop.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    jobs = [(seed, s, min(chunk, n - s), size) for s in range(0, n, chunk)]
    if processes <= 1 or len(jobs) == 1:
        return np.concatenate([_images(j) for j in jobs])
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:  # spawn: safe beside torch's threads
        return np.concatenate(pool.map(_images, jobs))
