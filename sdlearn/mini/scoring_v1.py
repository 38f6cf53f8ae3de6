"""Checker v1: the adherence checker for the *shipped* sd-mini v1 and world v1, frozen as it was.

Scorer v2 (``sdlearn.mini.scoring``) reads world v2 and may answer "none"; this copy stays only
while the bundled weights are v1, and goes when sd-mini v2 ships.

``analyse`` reads a picture back into words (background colour; each object's colour, shape and
position); ``score`` compares that reading with what a prompt asked for. No neural network is
involved (shapes come from a small linear classifier), so the checker is fast on a CPU, reads
held-out world renders without a mistake (``checker_accuracy``), and its errors can be understood
— which matters when it is the yardstick for guidance scales and step counts.

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import functools
import re
import time
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
import torch
from scipy.spatial import ConvexHull, QhullError

from . import world_v1 as world
from .world_v1 import COLOURS, PALETTE, POSITION_PHRASES, POSITIONS, SHAPES, Scene

SIZE = 64  # the checker reads every picture at the world's resolution
MIN_AREA = 40  # smallest world object (a small star) is ~120 px; noise specks are far smaller
_RGB = np.array([PALETTE[c] for c in COLOURS], dtype=np.float32)
_POS_XY = np.array([POSITIONS[p] for p in POSITIONS], dtype=np.float32)


def _nearest_colour(rgb: np.ndarray, exclude: str | None = None) -> np.ndarray:
    """Index into COLOURS of the nearest palette colour, for an (..., 3) array of pixels."""
    d = ((np.asarray(rgb, np.float32)[..., None, :] - _RGB) ** 2).sum(-1)
    if exclude is not None:
        d[..., COLOURS.index(exclude)] = np.inf
    return d.argmin(-1)


def _to_array(image: Any) -> np.ndarray:
    img = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
    img = img.convert("RGB")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BOX)  # area average: blends edges like world.render
    return np.asarray(img, dtype=np.float32)


# ----------------------------------------------------------------------------- shape classifier
def shape_features(sil: np.ndarray) -> np.ndarray:
    """Features of a boolean silhouette: its bounding-box crop at 16x16, fill, aspect, solidity.

    The crop gives the template (stars and triangles always point up in this world); fill ratio
    (circle pi/4, square 1, triangle 1/2) and solidity (area / convex-hull area, low for stars)
    are cues that survive blur better than the template does.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    ys, xs = np.nonzero(sil)
    crop = sil[ys.min():ys.max() + 1, xs.min():xs.max() + 1].astype(np.float32)
    h, w = crop.shape
    tmpl = np.asarray(Image.fromarray(crop, "F").resize((16, 16), Image.BOX)).ravel()
    # Hull of the pixel corners (not centres), so a 1-px-wide shape still has an area.
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        hull = ConvexHull(corners.astype(np.float64)).volume
    except QhullError:  # degenerate (a line): call it solid
        hull = float(len(xs))
    touches = float(ys.min() == 0 or xs.min() == 0 or ys.max() == SIZE - 1 or xs.max() == SIZE - 1)
    geo = [len(xs) / (h * w), np.log(w / h), len(xs) / max(hull, 1.0), touches]
    return np.concatenate([tmpl, np.array(geo, np.float32)])


@functools.lru_cache(maxsize=1)
def train_shape_classifier(n: int = 600, seed: int = 1,
                           steps: int = 150) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fit a softmax regression (numpy, fixed full-batch steps) on world silhouettes of ``seed``.

    Trained from the ground-truth masks of the *training* seed (never the held-out 999), once per
    process and cached: it takes 1-2 s, is bit-for-bit deterministic, and so needs no weights file
    that could drift out of sync with ``world.py``. Each mask is also used blurred and
    re-thresholded (what blur in a generated image does to a silhouette), so soft edges are known.
    Returns (mean, std, weights) for ``classify_shape``.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    feats, labels = [], []
    for i in range(n):
        s = world.sample(seed, i)
        lab, k = ndimage.label(s.mask > 0)
        if k != len(s.scene.objects):
            continue  # two objects touching: their masks cannot be told apart, skip the sample
        for j in range(1, k + 1):
            comp = lab == j
            cy, cx = np.argwhere(comp).mean(0) / SIZE
            obj = min(s.scene.objects, key=lambda o: (POSITIONS[o.position][0] - cx) ** 2
                      + (POSITIONS[o.position][1] - cy) ** 2)
            for sigma in (0.0, 0.8, 1.3):
                sil = comp if sigma == 0 else ndimage.gaussian_filter(comp * 1.0, sigma) >= 0.5
                if sil.sum() >= MIN_AREA:
                    feats.append(shape_features(sil))
                    labels.append(SHAPES.index(obj.shape))
    x, y = np.stack(feats), np.array(labels)
    mean, std = x.mean(0), x.std(0) + 1e-3
    x = np.concatenate([(x - mean) / std, np.ones((len(x), 1), np.float32)], 1)
    onehot = np.eye(len(SHAPES), dtype=np.float32)[y]
    w = np.zeros((x.shape[1], len(SHAPES)), np.float32)
    # Plain full-batch gradient descent: a convex problem, no randomness, nothing to tune. einsum
    # rather than @: skinny BLAS products thrash when other processes hold the cores (30x slower).
    for _ in range(steps):
        z = np.einsum("nf,fk->nk", x, w)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        w -= 0.5 * (np.einsum("nf,nk->fk", x, p - onehot) / len(x) + 1e-3 * w)
    return mean, std, w


def classify_shape(sil: np.ndarray) -> str:
    """The shape word for a boolean silhouette.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    mean, std, w = train_shape_classifier()
    f = (shape_features(sil) - mean) / std
    return SHAPES[int(np.argmax(np.append(f, 1.0) @ w))]


# ----------------------------------------------------------------------------- reading a picture
def analyse(image: Any, min_area: int = MIN_AREA) -> dict:
    """Read a picture: ``{"background": str, "objects": [{colour, shape, position, area}, ...]}``.

    Objects are sorted by area, largest first. Works on PIL images or HWC uint8 arrays of any size.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    img = _to_array(image)
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    bg = np.median(border, 0)  # robust to an object that pokes into the border
    bg_name = COLOURS[int(_nearest_colour(bg))]
    dist = np.linalg.norm(img - bg, axis=-1)
    # Loose foreground threshold: above the background's own noise (median border deviation) but
    # below half the closest palette gap (orange/yellow, 86), so every half-covered pixel is in.
    noise = float(np.median(np.linalg.norm(border - bg, axis=-1)))
    thresh = float(np.clip(20.0 + 2.5 * noise, 30.0, 42.0))
    tol = float(np.clip(30.0 + 2.5 * noise, 40.0, 60.0))  # off-mixing-line residual that is real
    lab, k = ndimage.label(dist > thresh)
    found = []
    for j in range(1, k + 1):
        comp = lab == j
        if comp.sum() < min_area:
            continue
        pix, d = img[comp], dist[comp]
        refs: list[np.ndarray] = []
        todo = np.ones(len(pix), bool)
        # Find the component's colours one at a time. A blurred rim is a mix of background and
        # object (pink on black rims look gray), so only the strongest pixels name a colour, and
        # a second colour counts only where pixels lie off every mixing line found so far.
        while todo.sum() >= max(min_area // 2, 0.15 * len(pix)) and len(refs) < 3:
            strong = todo & (d >= 0.7 * np.percentile(d[todo], 95))
            idx = _nearest_colour(pix[strong], exclude=bg_name)
            top = np.bincount(idx).argmax()
            refs.append(np.median(pix[strong][idx == top], 0))
            diff = np.stack(refs) - bg
            a = np.clip(((pix - bg) @ diff.T) / (diff ** 2).sum(1), 0.0, 1.0)
            resid = np.linalg.norm(pix[:, None] - (bg + a[..., None] * diff), axis=-1)
            todo = resid.min(1) > tol
        # Each pixel is bg + a * (ref - bg), a being its coverage: give it to the colour whose
        # mixing line fits best, keep it where it is at least half covered (as the GT mask does).
        best = resid.argmin(1)
        for m in range(len(refs)):
            sil = np.zeros_like(comp)
            sil[comp] = (best == m) & (a[np.arange(len(best)), best] >= 0.5)
            sil = ndimage.binary_fill_holes(sil)  # noise holes are not part of any world shape
            if sil.sum() >= min_area:
                found.append(sil)
    if found:  # a speck a tenth the size of the main object is a sampling artefact, not an object
        biggest = max(int(s.sum()) for s in found)
        found = [s for s in found if s.sum() >= 0.08 * biggest]
    objects = []
    for sil in found:
        cy, cx = np.argwhere(sil).mean(0) / SIZE
        pos = list(POSITIONS)[int(((_POS_XY - [cx, cy]) ** 2).sum(1).argmin())]
        colour = COLOURS[int(_nearest_colour(np.median(img[sil], 0), exclude=bg_name))]
        objects.append({"colour": colour, "shape": classify_shape(sil), "position": pos,
                        "area": int(sil.sum())})
    objects.sort(key=lambda o: -o["area"])
    return {"background": bg_name, "objects": objects}


# ----------------------------------------------------------------------------- prompts and scores
_OK_KEYS = ("colour_ok", "shape_ok", "background_ok", "position_ok")
_SYNONYMS = {"grey": "gray", "center": "centre", "middle": "centre"}


def parse_prompt(prompt: str) -> dict:
    """Colour/shape/position words of a prompt: ``{"objects": [...], "background": str | None}``.

    Each shape word takes the colour word just before it; "<colour> background" names the
    background; a position word belongs to the object before it.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    words = [_SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())]
    objects: list[dict] = []
    background, colour = None, None
    for i, w in enumerate(words):
        if w in PALETTE:
            if i + 1 < len(words) and words[i + 1] == "background":
                background = w
            else:
                colour = w
        elif w.rstrip("s") in SHAPES:
            objects.append({"colour": colour, "shape": w.rstrip("s"), "position": None})
            colour = None
        elif w in POSITIONS and objects and objects[-1]["position"] is None:
            objects[-1]["position"] = w
    if colour is not None:  # "a red thing": a colour with no shape is still a request
        objects.append({"colour": colour, "shape": None, "position": None})
    return {"objects": objects, "background": background}


def _targets(prompt: Scene | str) -> dict:
    """What a prompt asks for, from a Scene (exact) or from its text (parsed)."""
    if isinstance(prompt, str):
        return parse_prompt(prompt)
    objs = [{"colour": o.colour, "shape": o.shape,
             "position": o.position if POSITION_PHRASES[o.position] in prompt.caption else None}
            for o in prompt.objects]
    bg = prompt.background if prompt.mentions_background else None  # unnamed: the model may choose
    return {"objects": objs, "background": bg}


def _judge(reading: dict, want: dict) -> dict:
    det = reading["objects"]
    match: list[int | None] = [None] * len(want["objects"])
    used: set[int] = set()
    for t, o in enumerate(want["objects"]):  # first pass: the largest object of the asked colour
        for d, got in enumerate(det):
            if d not in used and o["colour"] is not None and got["colour"] == o["colour"]:
                match[t] = d
                used.add(d)
                break
    for t in range(len(match)):  # colour missing: judge the shape of the largest object left
        rest = [d for d in range(len(det)) if d not in used]
        if match[t] is None and rest:
            match[t] = rest[0]
            used.add(rest[0])
    rows = []
    for o, d in zip(want["objects"], match):
        got = det[d] if d is not None else None
        rows.append({k + "_ok": None if o[k] is None else bool(got is not None and got[k] == o[k])
                     for k in ("colour", "shape", "position")})

    def agg(key: str) -> bool | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return all(vals) if vals else None

    bg = want.get("background")
    return {"colour_ok": agg("colour_ok"), "shape_ok": agg("shape_ok"),
            "position_ok": agg("position_ok"),
            "background_ok": None if bg is None else reading["background"] == bg,
            "count_ok": len(det) == len(want["objects"]), "objects": rows, "reading": reading}


def score(image: Any, caption_or_scene: Scene | str) -> dict:
    """Does ``image`` show what the prompt asks for? ``colour_ok``, ``shape_ok``, ``background_ok``.

    ``colour_ok``: every requested colour is on some detected object. ``shape_ok``: the object of
    the requested colour (the largest one left if that colour is missing) has the requested shape.
    ``background_ok`` / ``position_ok`` are None when the prompt does not name them.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    return _judge(analyse(image), _targets(caption_or_scene))


def eval_prompts(n: int = 200, seed: int = 999) -> list[Scene]:
    """``n`` held-out scenes (the same ones ``world.sample(seed, i)`` draws), captions included.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    return [world.random_scene(np.random.default_rng([seed, i])) for i in range(n)]


def checker_accuracy(n: int = 500, seed: int = 999,
                     corrupt: Callable[[np.ndarray, int], np.ndarray] | None = None) -> dict:
    """How often ``analyse`` reads ground-truth renders of held-out ``seed`` correctly.

    Every attribute is checked (background and positions too, whatever the caption says).
    ``corrupt(image, i)`` can degrade each render first, to mimic generated pictures.

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
    """
    keys = ("colour_ok", "shape_ok", "background_ok", "position_ok", "count_ok")
    hits = dict.fromkeys(keys, 0)
    for i in range(n):
        s = world.sample(seed, i)
        img = s.image if corrupt is None else corrupt(s.image, i)
        want = {"objects": [vars(o) for o in s.scene.objects], "background": s.scene.background}
        r = _judge(analyse(img), want)
        for k in keys:
            hits[k] += bool(r[k])
    return {"n": n, **{k[:-3]: hits[k] / n for k in keys}}


def adherence(generate: Callable, prompts: Sequence[Scene | str], seed: int = 0,
              batch_size: int = 1) -> dict:
    """Mean colour/shape/background accuracy of ``generate`` over ``prompts``, plus per-prompt rows.

    Prompt ``i`` uses seed ``seed + i``. With ``batch_size == 1`` ``generate(prompt, seed)`` returns
    one image; with ``batch_size > 1`` it is called as ``generate(prompts, seeds)`` with lists and
    must return a list of images (one pipeline call per batch is much faster). Background and
    position accuracies are averaged over the prompts that name them (None if none does).

    Introduced in notebooks/04_diy_sampling_loop.ipynb.
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
            r = score(img, prompts[i])
            rows.append({"prompt": texts[i], "seed": seed + i,
                         **{k: r[k] for k in _OK_KEYS},
                         "reading": r["reading"]})

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(vals)) if vals else None

    return {"n": len(rows), "colour": mean("colour_ok"), "shape": mean("shape_ok"),
            "background": mean("background_ok"), "position": mean("position_ok"), "rows": rows}


def steps_vs_quality(pipe: Any, names: Sequence[str], steps: Sequence[int], prompts: Sequence[Any],
                     guidance_scale: float = 7.5, seed: int = 0, batch_size: int = 8) -> list[dict]:
    """Prompt adherence (``adherence``) for each scheduler x step count.

    Every setting sees the same prompts and seeds (prompt i: seed ``seed + i``), so rows are
    compared picture for picture. Pictures are made with ``sdlearn.sampling.sample`` at the
    model's native size, ``batch_size`` prompts per call. The pipeline's scheduler is restored.
    Returns rows ``{scheduler, steps, unet_calls, colour, shape, seconds_per_image}``.

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
                             "colour": res["colour"], "shape": res["shape"],
                             "seconds_per_image": (time.perf_counter() - t0) / max(res["n"], 1)})
    finally:
        pipe.scheduler = original
    return rows
