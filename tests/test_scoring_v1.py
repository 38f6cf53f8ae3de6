"""The prompt-adherence checker reads world pictures correctly, clean and degraded."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

import torch

from sdlearn.mini import scoring_v1 as scoring, world_v1 as world
from sdlearn.mini.world_v1 import PALETTE, Scene, WorldObject


def _degrade(image: np.ndarray, i: int) -> np.ndarray:
    """Mild blur + Gaussian noise, roughly what a small diffusion model's samples look like."""
    rng = np.random.default_rng(i)
    x = ndimage.gaussian_filter(image.astype(np.float32), (0.8, 0.8, 0))
    return np.clip(x + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def test_checker_accuracy_on_held_out_renders() -> None:
    acc = scoring.checker_accuracy(n=200, seed=999)
    assert acc["n"] == 200
    assert acc["shape"] >= 0.95, acc
    assert acc["colour"] >= 0.99, acc
    assert acc["background"] >= 0.99, acc


def test_checker_survives_blur_and_noise() -> None:
    acc = scoring.checker_accuracy(n=150, seed=999, corrupt=_degrade)
    assert acc["shape"] >= 0.9, acc
    assert acc["colour"] >= 0.9, acc
    assert acc["background"] >= 0.9, acc


def test_parse_prompt() -> None:
    p = scoring.parse_prompt("a red circle on a blue background")
    assert p == {"objects": [{"colour": "red", "shape": "circle", "position": None}],
                 "background": "blue"}
    two = scoring.parse_prompt("A small grey star at the top and a pink square at the bottom, "
                               "green background")
    assert [(o["colour"], o["shape"], o["position"]) for o in two["objects"]] == [
        ("gray", "star", "top"), ("pink", "square", "bottom")]
    assert two["background"] == "green"
    assert scoring.parse_prompt("a purple triangle")["background"] is None


def test_analyse_hand_drawn_image() -> None:
    # Drawn with PIL directly (no anti-aliasing, 128 px, not the world's renderer).
    img = Image.new("RGB", (128, 128), PALETTE["yellow"])
    ImageDraw.Draw(img).ellipse([34, 34, 94, 94], fill=PALETTE["red"])
    r = scoring.analyse(img)
    assert r["background"] == "yellow"
    assert len(r["objects"]) == 1
    assert (r["objects"][0]["colour"], r["objects"][0]["shape"]) == ("red", "circle")
    assert r["objects"][0]["position"] == "centre"


def test_own_render_scores_ok_and_wrong_shape_does_not() -> None:
    for i in range(10):
        scene = world.sample(999, i).scene
        image = world.render(scene).image
        s = scoring.score(image, scene)
        assert s["colour_ok"] and s["shape_ok"], (scene.caption, s["reading"])
        assert s["background_ok"] in (None, True)
        # The same prompt, but the picture shows another shape: shape fails, colour still passes.
        other = Scene([WorldObject(scoring.SHAPES[(scoring.SHAPES.index(o.shape) + 1) % 4],
                                   o.colour, o.size, o.position) for o in scene.objects],
                      scene.background)
        bad = scoring.score(world.render(other).image, scene)
        assert bad["colour_ok"] and not bad["shape_ok"], (scene.caption, bad["reading"])


def test_score_from_prompt_text() -> None:
    scene = Scene([WorldObject("star", "green", "big", "left")], "white")
    image = world.render(scene).image
    assert scoring.score(image, "a green star on a white background")["background_ok"] is True
    s = scoring.score(image, "a blue star on a black background")
    assert s["colour_ok"] is False and s["shape_ok"] is True and s["background_ok"] is False


def test_eval_prompts_match_held_out_samples() -> None:
    prompts = scoring.eval_prompts(n=5)
    assert [p.caption for p in prompts] == [world.sample(999, i).caption for i in range(5)]


def test_adherence_with_perfect_and_batched_generators() -> None:
    prompts = scoring.eval_prompts(n=12)
    by_caption = {p.caption: p for p in prompts}

    def perfect(prompt: str, seed: int) -> Image.Image:
        return Image.fromarray(world.render(by_caption[prompt]).image)

    res = scoring.adherence(perfect, prompts)
    assert res["n"] == 12 and res["colour"] == 1.0 and res["shape"] == 1.0
    assert res["background"] in (None, 1.0)

    def flat(prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        return [Image.new("RGB", (64, 64), PALETTE["gray"]) for _ in prompts]

    res = scoring.adherence(flat, prompts, batch_size=5)
    assert res["n"] == 12 and res["colour"] == 0.0 and res["shape"] == 0.0
    assert [r["seed"] for r in res["rows"]] == list(range(12))


def test_steps_vs_quality_rows(tiny_pipe):
    pipe = tiny_pipe
    before = pipe.scheduler
    rows = scoring.steps_vs_quality(pipe, ["euler", "heun"], [2], ["a red circle", "a blue star"],
                            batch_size=2)
    assert pipe.scheduler is before
    assert [(r["scheduler"], r["steps"], r["unet_calls"]) for r in rows] == [("euler", 2, 2),
                                                                            ("heun", 2, 3)]
    for r in rows:
        assert 0 <= r["colour"] <= 1 and 0 <= r["shape"] <= 1 and r["seconds_per_image"] > 0
    assert torch.is_grad_enabled()
