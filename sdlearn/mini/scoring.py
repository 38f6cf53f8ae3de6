"""A deterministic checker that reads a picture of the sd-mini world back into words.

Every adherence figure in the course rests on it, so it is plain code in four steps, with no
network and no training:

1. **Background.** Its colour is the most common palette colour on the border. Each colour has
   one second *tone* (``world.TONES``); a pixel is background if it lies on the line from the
   colour to its tone. How the background pixels move along that line gives the style: not at
   all (flat), smoothly (gradient), in rows or columns (stripes), in both (checks), in spots (dots).
2. **Objects.** Connected regions off that line; specks under ``MIN_AREA`` pixels are ignored
   (the world's unmentioned distractors are smaller).
3. **Colour.** The most common palette colour of an object's strongest pixels. Under
   ``MIN_PURITY`` of them share it: a two-coloured object, which is no shape.
4. **Shape.** The ideal outline of every shape is fitted to the object's silhouette (same area,
   same centroid, the best of a few turns) and compared by IoU. The best IoU is the object's
   *crispness*. The shape is named only if its outline is off by at most ``MAX_ERR`` pixels on
   average, its IoU beats the runner-up's by ``MARGIN``, and the edge is not blurred
   (``MAX_EDGE``). Otherwise the answer is ``"none"``: a
   blob, a lumpy circle or a smeared star is not a shape.

Introduced in notebooks/11_training_sd_mini.ipynb.
"""
from __future__ import annotations

import functools
import re
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw
import torch
from scipy import ndimage

from . import world
from .degrade import round_trip
from .world import ALL_SHAPES, BACKGROUND_STYLES, COLOURS, PALETTE, STYLE_WORDS, TONES, Scene

SIZE = 64  # the checker reads every picture at the world's resolution
MIN_AREA = 40  # the smallest captioned object (a small star) covers ~50 px; distractors < 35
MIN_PURITY = 0.7  # share of an object's strong pixels that must have its colour
# Set on 300 held-out pictures (benchmarks/scorer.py): clean renders all read right, >= 90 % of
# each degradation rejected, and as many as possible of the clean renders' VAE round trips (what a
# perfect generator would output) still named.
MAX_ERR, MARGIN = 0.55, 0.02  # outline error (px) of the best fit, and its IoU lead over the next
MAX_EDGE = 1.4  # mixed pixels per pixel of outline: ~0.6 crisp, ~1.0 after sd-mini's VAE, ~2.7 blurred
_RGB = np.array([PALETTE[c] for c in COLOURS], np.float32)
_TONE = np.array([TONES[c] for c in COLOURS], np.float32)
_ANGLES = np.arange(-20, 21, 5)


def _to_array(image: Any) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BOX)  # area average: blends edges like world.render
    return np.asarray(img, dtype=np.float32)


def _labels(pix: np.ndarray) -> np.ndarray:
    """Index into COLOURS of the nearest palette colour of each (..., 3) pixel."""
    return ((pix[..., None, :] - _RGB) ** 2).sum(-1).argmin(-1)


def _on_line(pix: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(t, residual): where each pixel projects on the line colour k -> its tone (0..1), and how
    far off that line it is."""
    a, b = _RGB[k], _TONE[k]
    t = np.clip(((pix - a) @ (b - a)) / ((b - a) ** 2).sum(), 0.0, 1.0)
    return t, np.linalg.norm(pix - (a + t[..., None] * (b - a)), axis=-1)


# ----------------------------------------------------------------------------- step 1: background
def background_style(t: np.ndarray, is_bg: np.ndarray) -> str:
    """The style of a background from ``t`` (0 = colour, 1 = tone) over its pixels ``is_bg``.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    v = t[is_bg]
    if len(v) < 50 or (v > 0.5).mean() < 0.04 and v.std() < 0.12:
        return "flat"
    yy, xx = np.nonzero(is_bg)
    design = np.stack([np.ones_like(xx), xx, yy], 1).astype(np.float64)
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    r2 = 1 - ((design @ coef - v) ** 2).sum() / max(((v - v.mean()) ** 2).sum(), 1e-9)
    if r2 > 0.8:  # explained by a plane: a gradient
        return "gradient"
    on = (t > 0.5) & is_bg
    if on.sum() < 0.33 * is_bg.sum():
        return "dots"

    def impurity(axis: int) -> float:  # rows (axis=1) or columns (axis=0) that mix both tones
        n = is_bg.sum(axis)
        p = on.sum(axis)[n > 8] / n[n > 8]
        return float(np.minimum(p, 1 - p).mean()) if len(p) else 0.5

    return "stripes" if min(impurity(0), impurity(1)) < 0.15 else "checks"


# ----------------------------------------------------------------------------- step 4: shapes
def _area_centroid(pts: np.ndarray) -> tuple[float, np.ndarray]:
    """Area and centroid of a polygon (the shoelace formula)."""
    x, y = pts[:, 0], pts[:, 1]
    cross = x * np.roll(y, -1) - np.roll(x, -1) * y
    area = cross.sum() / 2
    return abs(area), np.array([((x + np.roll(x, -1)) * cross).sum(), ((y + np.roll(y, -1)) * cross).sum()]) / (6 * area)


@functools.lru_cache(maxsize=None)
def _unit(shape: str, angle: float) -> tuple[np.ndarray, float]:
    """Outline of ``shape`` (radius 1, turned by ``angle``) around its own centroid, and its area."""
    pts = np.array(world.outline(shape, 0.0, 0.0, 1.0, angle))
    area, c = _area_centroid(pts)
    return pts - c, area


def _ideal(shape: str, angle: float, area: float, cx: float, cy: float, box: tuple[int, int, int, int],
           ss: int = 4) -> np.ndarray:
    """The ideal silhouette (pixels at least half covered) in the window ``box`` = (x0, y0, x1, y1)."""
    pts, unit_area = _unit(shape, float(angle))
    r = np.sqrt(area / unit_area)
    x0, y0, x1, y1 = box
    poly = [((cx + r * px - x0) * ss, (cy + r * py - y0) * ss) for px, py in pts]
    img = Image.new("L", ((x1 - x0) * ss, (y1 - y0) * ss), 0)
    ImageDraw.Draw(img).polygon(poly, fill=255)
    return np.asarray(img.resize((x1 - x0, y1 - y0), Image.BOX)) >= 128


def fit_shapes(sil: np.ndarray) -> dict[str, float]:
    """IoU of the silhouette with each shape's best-fitting ideal outline (equal area, same
    centroid, turned by -20..20 degrees).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    ys, xs = np.nonzero(sil)
    area, cx, cy = float(len(xs)), xs.mean() + 0.5, ys.mean() + 0.5
    pad = int(np.sqrt(area)) + 3
    box = (max(0, xs.min() - pad), max(0, ys.min() - pad), min(SIZE, xs.max() + pad + 1), min(SIZE, ys.max() + pad + 1))
    mine = sil[box[1]:box[3], box[0]:box[2]]
    out = {}

    def iou(shape: str, angle: float) -> float:
        ideal = _ideal(shape, angle, area, cx, cy, box)
        return float((mine & ideal).sum() / max((mine | ideal).sum(), 1))

    for shape in ALL_SHAPES:
        if shape == "circle":
            out[shape] = iou(shape, 0.0)
            continue
        # every 5 degrees, then 2.5 degrees either side of the best
        best, at = max((iou(shape, a), a) for a in _ANGLES)
        out[shape] = max(best, iou(shape, at - 2.5), iou(shape, at + 2.5))
    return out


def name_shape(ious: dict[str, float], err: float, edge: float) -> str:
    """The shape word, or ``"none"`` if no outline fits well and clearly or the edge is blurred.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    ranked = sorted(ious.items(), key=lambda kv: -kv[1])
    (best, iou), (_, second) = ranked[0], ranked[1]
    return best if err <= MAX_ERR and iou - second >= MARGIN and edge <= MAX_EDGE else "none"


# ----------------------------------------------------------------------------- reading a picture
def analyse(image: Any, min_area: int = MIN_AREA) -> dict:
    """Read a picture into ``{"background", "style", "objects": [{colour, shape, crispness,
    position, x, y, area, purity, edge, err, fit, margin}, ...]}``, objects sorted by area,
    largest first. ``fit`` is the best-fitting outline and ``margin`` its IoU lead over the next,
    whether or not ``name_shape`` accepts it as the ``shape``.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    img = _to_array(image)
    border = np.concatenate([img[:2].reshape(-1, 3), img[-2:].reshape(-1, 3),
                             img[2:-2, :2].reshape(-1, 3), img[2:-2, -2:].reshape(-1, 3)])
    bg = int(np.bincount(_labels(border), minlength=len(COLOURS)).argmax())
    t, resid = _on_line(img, bg)
    noise = float(np.median(_on_line(border, bg)[1]))
    fg = resid > float(np.clip(20.0 + 2.5 * noise, 30.0, 42.0))  # above the background's own noise
    lab, k = ndimage.label(fg)
    objects = []
    for j in range(1, k + 1):
        comp = lab == j
        if comp.sum() < min_area:
            continue
        strong = comp & (resid >= 0.7 * np.percentile(resid[comp], 90))
        names = _labels(img[strong])
        colour = int(np.bincount(names, minlength=len(COLOURS)).argmax())
        purity = float((names == colour).mean())
        # The silhouette: pixels of the object's colour (or its tone), or at least half way
        # from the background towards the object's colour.
        ref = np.median(img[strong][names == colour], 0)
        base = _RGB[bg] + t[..., None] * (_TONE[bg] - _RGB[bg])  # each pixel's own background
        cover = ((img - base) * (ref - base)).sum(-1) / np.maximum(((ref - base) ** 2).sum(-1), 1.0)
        near = ndimage.binary_dilation(comp, iterations=2)
        sil = ndimage.binary_fill_holes(near & ((_labels(img) == colour) | (cover >= 0.5)))
        if sil.sum() < min_area:
            continue
        perimeter = (sil & ~ndimage.binary_erosion(sil)).sum()
        # Half-covered pixels (a mix of object and background, not the object's own tone) per
        # pixel of outline: the width of the edge. Blur widens it.
        tone_line = _on_line(img, colour)[1] < 25  # the object's colour, its tone, or between
        mixed = near & (cover > 0.2) & (cover < 0.8) & ~tone_line
        edge = float(mixed.sum() / max(perimeter, 1))
        ious = fit_shapes(sil)
        # Outline error in pixels: the pixels where silhouette and ideal disagree (from the IoU
        # of two equal areas) per pixel of outline. Unlike the IoU it does not punish small objects.
        best = max(ious.values())
        err = 2 * sil.sum() * (1 - best) / ((1 + best) * max(perimeter, 1))
        shape = name_shape(ious, err, edge) if purity >= MIN_PURITY else "none"
        ys, xs = np.nonzero(sil)
        x, y = (xs.mean() + 0.5) / SIZE, (ys.mean() + 0.5) / SIZE
        runner_up = sorted(ious.values())[-2]
        objects.append({"colour": COLOURS[colour], "shape": shape, "crispness": best,
                        "fit": max(ious, key=ious.get), "margin": best - runner_up,
                        "position": world.position_word(x, y), "x": float(x), "y": float(y),
                        "area": int(sil.sum()), "purity": purity, "edge": edge, "err": float(err)})
    objects.sort(key=lambda o: -o["area"])
    is_bg = ~ndimage.binary_dilation(fg, iterations=1)
    return {"background": COLOURS[bg], "style": background_style(t, is_bg), "objects": objects}


# ----------------------------------------------------------------------------- prompts and scores
_OK_KEYS = ("colour_ok", "shape_ok", "background_ok", "position_ok")
_SYNONYMS = {"grey": "gray", "center": "centre", "middle": "centre"}
_STYLE_OF = {w: s for s, w in STYLE_WORDS.items()} | {"dots": "dots"}
_SIDES = {"left": lambda x, y: x < 0.44, "right": lambda x, y: x > 0.56, "top": lambda x, y: y < 0.44,
          "bottom": lambda x, y: y > 0.56, "centre": lambda x, y: max(abs(x - 0.5), abs(y - 0.5)) < 0.12}


def _singular(word: str) -> str:
    return word[:-2] if word.endswith("sses") else word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def parse_prompt(prompt: str) -> dict:
    """What a prompt asks for: ``{"objects": [{colour, shape, position}], "background",
    "style"}`` (None where it says nothing). Words before "background" describe it; a
    position word belongs to the object before it; "shape", "thing", "object" and "something"
    stand for an object of any shape.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    words = [_SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())]
    objects: list[dict] = []
    out = {"objects": objects, "background": None, "style": None}
    pending: str | None = None  # a colour word waiting for its noun
    for i, w in enumerate(words):
        before_bg = "background" in words[i + 1:i + 3] and all(
            x in PALETTE or x in _STYLE_OF or x == "background" for x in words[i + 1:words.index("background", i)])
        if w in PALETTE:
            if before_bg:
                out["background"] = w
            elif i > 0 and words[i - 1] == "something":
                objects[-1]["colour"] = w
            else:
                pending = w
        elif w in _STYLE_OF and (before_bg or (w == "dots" and i > 1 and words[i - 1] == "with")):
            out["style"] = _STYLE_OF[w]
        elif _singular(w) in ALL_SHAPES or w in ("shape", "thing", "object", "something"):
            shape = _singular(w) if _singular(w) in ALL_SHAPES else None
            objects.append({"colour": pending, "shape": shape, "position": None})
            pending = None
        elif w in _SIDES and objects and objects[-1]["position"] is None:
            objects[-1]["position"] = w
    if pending is not None:  # "a red one": a colour with no noun is still a request
        objects.append({"colour": pending, "shape": None, "position": None})
    return out


def _agrees(o: dict, got: dict) -> int:
    """How well a detected object agrees with an asked one: colour, the surest clue, outweighs
    place and shape together; place outweighs shape."""
    return (4 * (o["colour"] is not None and got["colour"] == o["colour"])
            + 2 * (o["position"] is not None and _SIDES[o["position"]](got["x"], got["y"]))
            + (o["shape"] is not None and got["shape"] == o["shape"]))


def _judge(reading: dict, want: dict) -> dict:
    det = reading["objects"]
    match: list[int | None] = [None] * len(want["objects"])
    used: set[int] = set()
    # Each asked object is judged on the detected object that agrees with it most (the larger
    # one on a tie), the most specific requests first.
    order = sorted(range(len(want["objects"])), key=lambda t: -sum(v is not None for v in want["objects"][t].values()))
    for t in order:
        free = [d for d in range(len(det)) if d not in used]
        if free:
            match[t] = max(free, key=lambda d: (_agrees(want["objects"][t], det[d]), -d))
            used.add(match[t])
    rows = []
    for o, d in zip(want["objects"], match):
        got = det[d] if d is not None else None
        row = {k + "_ok": None if o[k] is None else bool(got is not None and got[k] == o[k])
               for k in ("colour", "shape")}
        row["position_ok"] = None if o["position"] is None else bool(
            got is not None and _SIDES[o["position"]](got["x"], got["y"]))
        row["crispness"] = None if got is None else got["crispness"]
        row["object"] = d  # which of reading["objects"] was judged (None: nothing left to judge)
        rows.append(row)

    def agg(key: str) -> bool | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return all(vals) if vals else None

    bg = [reading[k] == want[k] for k in ("background", "style") if want.get(k) is not None]
    return {"colour_ok": agg("colour_ok"), "shape_ok": agg("shape_ok"), "position_ok": agg("position_ok"),
            "background_ok": all(bg) if bg else None, "count_ok": len(det) == len(want["objects"]),
            "objects": rows, "reading": reading}


def score(image: Any, caption_or_scene: Scene | str) -> dict:
    """Does ``image`` show what the prompt asks for? ``colour_ok``, ``shape_ok`` (``"none"``
    counts as wrong), ``position_ok``, ``background_ok`` (colour and style, as far as named):
    None where the prompt does not ask. The object of the asked colour is judged (else the
    asked shape, else the largest left).

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    text = caption_or_scene if isinstance(caption_or_scene, str) else caption_or_scene.caption
    return _judge(analyse(image), parse_prompt(text))


def eval_prompts(n: int = 200, seed: int = 999) -> list[Scene]:
    """``n`` held-out scenes (the same ones ``world.sample(seed, i)`` draws), captions included.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    return [world.random_scene(np.random.default_rng([seed, i])) for i in range(n)]


def _centroid(o: world.WorldObject) -> np.ndarray:
    """Where the centroid of a drawn object is (a triangle's lies below its centre)."""
    return _area_centroid(np.array(world.outline(o.shape, o.x, o.y, o.r, o.angle)))[1]


def checker_accuracy(n: int = 500, seed: int = 999,
                     corrupt: Callable[[np.ndarray, int, int], np.ndarray] | None = None,
                     vae: Any = None) -> dict:
    """How often ``analyse`` reads renders of held-out ``seed`` right: every attribute that was
    drawn, named in the caption or not (position: centroid within 2 px). ``corrupt(image, seed,
    i)`` degrades each render first (``degrade.DEGRADATIONS``); ``vae`` then passes it through
    a VAE round trip, as every generated picture is. ``rejected``: the share of drawn objects
    read as ``"none"`` or not found, which a degraded picture should score near 1.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    samples = [world.sample(seed, i) for i in range(n)]
    images = [s.image if corrupt is None else corrupt(s.image, seed, i) for i, s in enumerate(samples)]
    if vae is not None:
        images = round_trip(vae, images)
    hits = {k: 0 for k in ("colour", "shape", "position", "background", "style", "count")}
    rejected = drawn = 0
    for s, image in zip(samples, images):
        r = analyse(image)
        det = r["objects"]
        ok = {"colour": True, "shape": True, "position": True}
        for o in s.scene.objects:
            got = min(det, key=lambda d: (d["x"] - o.x) ** 2 + (d["y"] - o.y) ** 2, default=None)
            ok["colour"] &= got is not None and got["colour"] == o.colour
            ok["shape"] &= got is not None and got["shape"] == o.shape
            ok["position"] &= got is not None and bool(np.hypot(*(np.array([got["x"], got["y"]]) - _centroid(o))) < 0.03)
            drawn += 1
            rejected += got is None or got["shape"] == "none"
        hits["count"] += len(det) == len(s.scene.objects)
        hits["background"] += r["background"] == s.scene.background
        hits["style"] += r["style"] == s.scene.style
        for k, v in ok.items():
            hits[k] += v
    return {"n": n, **{k: v / n for k, v in hits.items()}, "rejected": rejected / max(drawn, 1)}


def adherence(generate: Callable, prompts: Sequence[Scene | str], seed: int = 0,
              batch_size: int = 1) -> dict:
    """Mean colour/shape/position/background accuracy and crispness of ``generate`` over
    ``prompts``, plus per-prompt rows.

    Prompt ``i`` uses seed ``seed + i``. With ``batch_size == 1`` ``generate(prompt, seed)`` returns
    one image; with ``batch_size > 1`` it is called as ``generate(prompts, seeds)`` with lists and
    must return a list of images. Each accuracy is averaged over the prompts that ask for it.

    Introduced in notebooks/11_training_sd_mini.ipynb.
    """
    texts = [p if isinstance(p, str) else p.caption for p in prompts]
    rows = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(range(start, min(start + batch_size, len(prompts))))
        if batch_size == 1:
            images = [generate(texts[start], seed + start)]
        else:
            images = list(generate([texts[i] for i in chunk], [seed + i for i in chunk]))
        for i, img in zip(chunk, images):
            r = score(img, texts[i])
            crisp = [o["crispness"] for o in r["objects"] if o["crispness"] is not None]
            rows.append({"prompt": texts[i], "seed": seed + i, **{k: r[k] for k in _OK_KEYS},
                         "crispness": float(np.mean(crisp)) if crisp else None, "reading": r["reading"]})

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {"n": len(rows), "colour": mean("colour_ok"), "shape": mean("shape_ok"),
            "position": mean("position_ok"), "background": mean("background_ok"),
            "crispness": mean("crispness"), "rows": rows}


def _both(rows: list[dict]) -> float | None:
    """Share of rows with colour and shape both right, over the rows that ask for either."""
    vals = [all(r[k] for k in ("colour_ok", "shape_ok") if r[k] is not None) for r in rows
            if r["colour_ok"] is not None or r["shape_ok"] is not None]
    return float(np.mean(vals)) if vals else None


def steps_vs_quality(pipe: Any, names: Sequence[str], steps: Sequence[int], prompts: Sequence[Any],
                     guidance_scale: float = 7.5, seed: int = 0, batch_size: int = 8) -> list[dict]:
    """Prompt adherence (``adherence``) for each scheduler x step count.

    Every setting sees the same prompts and seeds (prompt i: seed ``seed + i``), so rows are
    compared picture for picture. Pictures are made with ``sdlearn.sampling.sample`` at the
    model's native size, ``batch_size`` prompts per call. The pipeline's scheduler is restored.
    Returns rows ``{scheduler, steps, unet_calls, colour, shape, both, seconds_per_image}``;
    ``both``: colour and shape right together, over the prompts that ask for either.

    Introduced in notebooks/05_schedulers.ipynb.
    """
    from ..device import make_generator
    from ..sampling import sample
    from ..schedulers import make_scheduler

    original, rows = pipe.scheduler, []
    try:
        for name in names:
            pipe.scheduler = make_scheduler(original, name)
            for n in steps:
                def generate(texts: list[str], seeds: list[int]) -> list:
                    return sample(pipe, texts, num_inference_steps=n, guidance_scale=guidance_scale,
                                  generator=[make_generator(s) for s in seeds])

                t0 = time.perf_counter()
                with torch.inference_mode():
                    res = adherence(generate, prompts, seed=seed, batch_size=batch_size)
                rows.append({"scheduler": name, "steps": n,
                             "unet_calls": len(pipe.scheduler.timesteps),
                             "colour": res["colour"], "shape": res["shape"], "both": _both(res["rows"]),
                             "seconds_per_image": (time.perf_counter() - t0) / max(res["n"], 1)})
    finally:
        pipe.scheduler = original
    return rows
