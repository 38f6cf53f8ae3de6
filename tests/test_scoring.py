"""Scorer v2 reads world renders right, rejects degraded shapes, and parses every caption."""
from __future__ import annotations

import numpy as np
import torch
import pytest
from PIL import Image, ImageDraw

from sdlearn.mini import degrade, scoring, world
from sdlearn.mini.world import PALETTE, Scene, WorldObject


def test_checker_accuracy_on_held_out_renders() -> None:
    acc = scoring.checker_accuracy(n=150, seed=999)
    assert acc["n"] == 150
    for key in ("colour", "shape", "position", "background", "style", "count"):
        assert acc[key] >= 0.98, acc


@pytest.mark.parametrize("name", sorted(degrade.DEGRADATIONS))
def test_degraded_shapes_are_rejected(name: str) -> None:
    assert scoring.checker_accuracy(n=40, corrupt=degrade.DEGRADATIONS[name])["rejected"] >= 0.9


def test_fit_names_every_shape_and_the_held_out_one() -> None:
    for k, shape in enumerate(world.ALL_SHAPES):
        scene = Scene([WorldObject(shape, "blue", 0.5, 0.45, 0.22, angle=10.0 - 4 * k)], "yellow", "stripes")
        obj = scoring.analyse(world.render(scene).image)["objects"][0]
        assert obj["shape"] == shape and obj["crispness"] > 0.9, obj


def test_parse_prompt() -> None:
    p = scoring.parse_prompt("a red circle on a blue background")
    assert p == {"objects": [{"colour": "red", "shape": "circle", "position": None}],
                 "background": "blue", "style": None}
    two = scoring.parse_prompt("A small grey star at the top and a pink cross at the bottom on a "
                               "striped green background")
    assert [(o["colour"], o["shape"], o["position"]) for o in two["objects"]] == [
        ("gray", "star", "top"), ("pink", "cross", "bottom")]
    assert (two["background"], two["style"]) == ("green", "stripes")
    assert scoring.parse_prompt("something red in the middle")["objects"] == [
        {"colour": "red", "shape": None, "position": "centre"}]
    assert scoring.parse_prompt("a circle on a yellow background with dots")["style"] == "dots"
    assert scoring.parse_prompt("a picture on a checkered background") == {
        "objects": [], "background": None, "style": "checks"}
    assert scoring.parse_prompt("two crosses")["objects"][0]["shape"] == "cross"


def test_analyse_hand_drawn_image() -> None:
    # Drawn with PIL directly (no anti-aliasing, 128 px, not the world's renderer).
    img = Image.new("RGB", (128, 128), PALETTE["yellow"])
    ImageDraw.Draw(img).ellipse([34, 34, 94, 94], fill=PALETTE["red"])
    r = scoring.analyse(img)
    assert (r["background"], r["style"]) == ("yellow", "flat")
    assert [(o["colour"], o["shape"], o["position"]) for o in r["objects"]] == [("red", "circle", "centre")]


def test_own_render_scores_ok_and_wrong_shape_does_not() -> None:
    for i in range(12):
        scene = world.sample(999, i).scene
        s = scoring.score(world.render(scene).image, scene)
        assert s["colour_ok"] in (None, True) and s["shape_ok"] in (None, True), (scene.caption, s["reading"])
        assert s["background_ok"] in (None, True) and s["position_ok"] in (None, True), scene.caption
        # The same picture with every shape swapped: a named shape fails, colour still passes.
        swapped = Scene([WorldObject(world.SHAPES[(world.SHAPES.index(o.shape) + 1) % 6], o.colour, o.x, o.y,
                                     o.r, o.angle) for o in scene.objects], scene.background, scene.style)
        bad = scoring.score(world.render(swapped).image, scene)
        assert bad["colour_ok"] in (None, True)
        assert bad["shape_ok"] in (None, False), (scene.caption, bad["reading"])


def test_score_from_prompt_text() -> None:
    image = world.render(Scene([WorldObject("star", "green", 0.25, 0.5, 0.2)], "white", "dots")).image
    ok = scoring.score(image, "a green star on the left on a dotted white background")
    assert ok["background_ok"] and ok["position_ok"] and ok["shape_ok"] and ok["colour_ok"]
    assert ok["objects"][0]["object"] == 0 and ok["reading"]["objects"][0]["shape"] == "star"
    s = scoring.score(image, "a blue star on the right on a black background")
    assert s["colour_ok"] is False and s["shape_ok"] is True and s["position_ok"] is False
    assert s["background_ok"] is False
    assert scoring.score(image, "a green star on a striped background")["background_ok"] is False


def test_eval_prompts_match_held_out_samples() -> None:
    prompts = scoring.eval_prompts(n=5)
    assert [p.caption for p in prompts] == [world.sample(999, i).caption for i in range(5)]


def test_adherence_with_perfect_and_batched_generators() -> None:
    prompts = scoring.eval_prompts(n=12)
    by_caption = {p.caption: p for p in prompts}

    def perfect(prompt: str, seed: int) -> Image.Image:
        return Image.fromarray(world.render(by_caption[prompt]).image)

    res = scoring.adherence(perfect, prompts)
    assert res["n"] == 12 and res["colour"] == 1.0 and res["shape"] == 1.0 and res["crispness"] > 0.9
    assert res["background"] in (None, 1.0) and res["position"] in (None, 1.0)

    def flat(prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        return [Image.new("RGB", (64, 64), PALETTE["gray"]) for _ in prompts]

    res = scoring.adherence(flat, prompts, batch_size=5)
    assert res["n"] == 12 and res["colour"] == 0.0 and res["shape"] == 0.0
    assert [r["seed"] for r in res["rows"]] == list(range(12))


def test_steps_vs_quality_rows(tiny_pipe):
    before = tiny_pipe.scheduler
    rows = scoring.steps_vs_quality(tiny_pipe, ["euler", "heun"], [2], ["a red circle", "a blue star"],
                                    batch_size=2)
    assert tiny_pipe.scheduler is before  # restored
    assert [(r["scheduler"], r["steps"], r["unet_calls"]) for r in rows] == [("euler", 2, 2), ("heun", 2, 3)]
    for r in rows:
        assert 0 <= r["colour"] <= 1 and 0 <= r["shape"] <= 1 and r["seconds_per_image"] > 0
        assert 0 <= r["both"] <= min(r["colour"], r["shape"])  # both right: never above either alone
    assert torch.is_grad_enabled()


def test_both_counts_only_what_is_asked():
    rows = [{"colour_ok": True, "shape_ok": None}, {"colour_ok": True, "shape_ok": False},
            {"colour_ok": None, "shape_ok": None}]
    assert scoring._both(rows) == 0.5 and scoring._both(rows[2:]) is None
