"""benchmarks/behaviour.py: its confidence intervals against known values, and every row once in
--quick mode on the random-weight "tiny" model (shapes and keys only; the figures mean nothing)."""
import json
import math
import sys

import numpy as np
import pytest
from scipy import stats


@pytest.fixture(scope="module")
def behaviour(load_benchmark):
    yield load_benchmark("behaviour")
    sys.modules.pop("behaviour_benchmark", None)


def test_wilson_known_values(behaviour):
    lo, hi = behaviour.wilson(8, 10)
    # by hand: z = 1.96, centre (0.8 + z^2/20) / (1 + z^2/10), half z sqrt(0.016 + z^2/400) / (1 + z^2/10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    ref = stats.binomtest(8, 10).proportion_ci(confidence_level=0.95, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-9)
    assert behaviour.wilson(0, 20)[0] == 0.0 and behaviour.wilson(20, 20)[1] == 1.0
    assert behaviour.wilson(0, 0) is None


def test_t_interval_and_bootstrap(behaviour):
    lo, hi = behaviour.t_interval([1, 2, 3, 4, 5])
    half = stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)  # = 1.963
    assert (lo, hi) == pytest.approx((3 - half, 3 + half))
    assert behaviour.t_interval([1.0]) is None
    x = np.arange(50.0)
    ci = behaviour.bootstrap(np.mean, x)
    assert ci == behaviour.bootstrap(np.mean, x)  # fixed seed: reproducible
    assert ci[0] < 24.5 < ci[1] and ci[1] - ci[0] == pytest.approx(2 * 1.96 * x.std() / math.sqrt(50), rel=0.15)
    assert behaviour.entropy_bits(["a", "b", "a", "b"]) == pytest.approx(1.0)
    assert behaviour.entropy_bits(["a"] * 5) == 0.0


def test_figures_and_targets(behaviour):
    fig = behaviour.target(behaviour.proportion([True] * 8 + [False] * 2 + [None]), ">=", 0.9)
    assert fig["value"] == 0.8 and fig["n"] == 10 and fig["met"] is False and fig["target"] == ">= 0.9"
    d = behaviour.paired_diff([1, 2, None, 4], [1, 1, 5, 2])
    assert d["value"] == pytest.approx(1.0) and d["n"] == 3
    rows = behaviour.targets_in({"a": {"curve": [{"w": 2.0, "x": fig}]}})
    assert rows[0]["figure"] == "a.curve[2.0].x" and rows[0]["met"] is False


def test_every_row_quick_on_tiny(behaviour, tiny_pipe, tmp_path, monkeypatch):
    # A shorter sweep and scheduler list keep this to seconds; the code paths are the same.
    monkeypatch.setattr(behaviour, "SWEEP", (1.0, 7.5))
    monkeypatch.setattr(behaviour, "UNDER_SPECIFIED", ("a circle", "a picture on a striped background"))
    monkeypatch.setattr(behaviour, "SCHEDULER_NAMES", ("ddim", "euler_a"))
    out = tmp_path / "behaviour.json"
    res = behaviour.main(["--quick", "--steps", "5", "--model", "tiny", "--out", str(out)], pipe=tiny_pipe)
    saved = json.loads(out.read_text())
    assert saved["quick"] is True and set(saved["rows"]) == {
        "1_adherence", "2_crispness", "3_guidance_sweep", "4_diversity", "5_negative_prompt",
        "6_img2img", "7_coarse_to_fine", "8_schedulers", "9_cross_attention"}
    rows = saved["rows"]
    for name, row in rows.items():
        assert "met" in row and "seconds" in row, name
    assert {"value", "ci", "n", "target", "met"} <= set(rows["1_adherence"]["colour"]["w7.5"])
    assert {"w1", "w7.5_minus_w1"} <= set(rows["1_adherence"]["shape"])
    assert {"w7.5", "w1", "ground_truth", "w7.5_minus_ground_truth"} <= set(rows["2_crispness"])
    point = rows["3_guidance_sweep"]["curve"][0]
    assert {"colour", "shape", "both", "crispness", "saturation", "clipped", "diversity_bits"} <= set(point)
    assert {"colour", "shape", "position"} == set(point["diversity_bits"])
    assert {"distinct_colours", "largest_colour_share"} <= set(rows["4_diversity"])
    assert "share_before" in rows["5_negative_prompt"]
    assert [p["strength"] for p in rows["6_img2img"]["curve"]] == [0.2, 0.4, 0.6, 0.8]
    assert "layout_kept_iou" in rows["6_img2img"]["curve"][0]
    # one point per UNet call: 5 steps, 6 calls for tiny's PNDM (PLMS warms up with an extra one)
    assert len(rows["7_coarse_to_fine"]["curve"]) >= 5 and "layout_iou" in rows["7_coarse_to_fine"]["coarse_step"]
    assert [s["scheduler"] for s in rows["8_schedulers"]["schedulers"]] == ["ddim", "euler_a"]
    row9 = rows["9_cross_attention"]
    assert "mass_on_own_object" in row9
    if row9["colour_words_scored"]:  # random weights may draw no colour that a prompt names
        assert row9["perfect_map_share"]["value"] <= row9["upper_bound_share"]["value"] + 1e-6
    assert res["summary"] and all({"figure", "target", "met"} <= set(s) for s in res["summary"])
    assert res["pictures_generated"] > 0

    # --update re-runs one row into the same file and keeps the others as they were
    before = json.loads(out.read_text())
    behaviour.main(["--quick", "--steps", "5", "--model", "tiny", "--out", str(out), "--rows", "4", "--update"],
                   pipe=tiny_pipe)
    after = json.loads(out.read_text())
    assert list(after["rows"]) == list(before["rows"])
    assert after["rows"]["1_adherence"] == before["rows"]["1_adherence"]
    assert set(after["updated_rows"]) == {"4_diversity"}
    with pytest.raises(SystemExit, match="holds"):  # before any compute: no pipe is needed to refuse
        behaviour.main(["--quick", "--steps", "7", "--model", "tiny", "--out", str(out), "--update"], pipe=None)


def test_perfect_map_and_upper_bound_on_a_known_square(behaviour):
    """A 32 x 32 object in a 128 px picture, through one 4 x 4 layer and one 8 x 8 layer."""
    import torch

    from sdlearn.attention import CrossAttentionStore, mass_share

    store = CrossAttentionStore()
    store.add("coarse", torch.full((1, 16, 77), 1 / 77), 1)
    store.add("fine", torch.full((1, 64, 77), 1 / 77), 1)
    region = np.zeros((128, 128), bool)
    region[32:64, 32:64] = True  # exactly one 4 x 4 cell, four 8 x 8 cells
    perfect = mass_share(store.perfect_map(region, 16), region)
    bound = behaviour.best_cell_share([(4, 4), (8, 8)], region, 16, {})
    uniform = mass_share(np.ones((16, 16)), region)
    assert uniform == pytest.approx(region.mean())  # a flat map scores the area share: chance
    assert region.mean() < perfect <= bound < 1  # bilinear upsampling spreads even a perfect map
    # the bound is the best single cell: one 8 x 8 cell inside the square (rows/cols 2-3) scores it
    one_cell = np.zeros((8, 8))
    one_cell[2, 2] = 1.0
    lat = torch.nn.functional.interpolate(torch.from_numpy(one_cell)[None, None].float(), size=(16, 16),
                                          mode="bilinear", align_corners=False)[0, 0].numpy()
    assert mass_share(lat, region) == pytest.approx(bound, abs=1e-5)
    rng = np.random.default_rng(0)  # and no map, spread over both grids at random, beats it
    for _ in range(20):
        maps = [rng.dirichlet(np.full(k * k, 0.3)).reshape(k, k) * rng.uniform(0.1, 1) for k in (4, 8)]
        lat = sum(torch.nn.functional.interpolate(torch.from_numpy(m)[None, None].float(), size=(16, 16),
                                                  mode="bilinear", align_corners=False)[0, 0] for m in maps)
        assert mass_share(lat.numpy(), region) <= bound + 1e-6
