"""benchmarks/multistep.py on the random-weight "tiny" model: its keys, its counts, its bad input."""
import sys

import pytest


@pytest.fixture(scope="module")
def multistep(load_benchmark):
    yield load_benchmark("multistep")
    sys.modules.pop("multistep_benchmark", None)


def test_settings_on_tiny(multistep, tiny_pipe, tmp_path):
    out, before = tmp_path / "m.json", tiny_pipe.scheduler
    res = multistep.main(["--n", "2", "--only", "ddim 25", "pndm 25, w = 4", "--stiffness-prompts", "1",
                          "--out", str(out)], pipe=tiny_pipe)
    assert out.exists() and [s["label"] for s in res["settings"]] == ["ddim 25", "pndm 25, w = 4"]
    for s in res["settings"]:
        assert s["colour"]["n"] <= 2 and 0 <= s["both"]["k"] <= s["both"]["n"] <= 2
        assert s["both"]["k"] <= min(s["colour"]["k"], s["shape"]["k"])  # both right implies each right
    assert res["settings"][1]["guidance"] == 4.0 and tiny_pipe.scheduler is before  # the pipeline's own restored
    assert [r["guidance"] for r in res["stiffness"]] == [1.0, 4.0, 7.5] and res["stability_limits"]["4"] == 0.3
    for r in res["stiffness"]:
        z = [s["z"] for s in r["steps"]]
        assert len(z) == 25 and r["max_z"] == max(z) and r["n_prompts"] == 1
        assert r["steps_past_limit"]["4"] == sum(v > 0.3 for v in z) >= r["steps_past_limit"]["1"]


def test_adams_order_1_is_ddim_and_order_4_differs(multistep, tiny_pipe):
    """``adams_scheduler(pipe, 1)`` is DDIM, bit for bit; order 4 combines four predictions (another picture)."""
    import torch

    from sdlearn.sampling import sample
    from sdlearn.schedulers import make_scheduler

    before = tiny_pipe.scheduler
    out = {}
    try:
        for key, sched in (("ddim", make_scheduler(before, "ddim")), ("ab1", multistep.adams_scheduler(before, 1)),
                           ("ab4", multistep.adams_scheduler(before, 4))):
            tiny_pipe.scheduler = sched
            out[key] = sample(tiny_pipe, "a red circle", num_inference_steps=6, generator=torch.Generator().manual_seed(3),
                              output_type="latent")
    finally:
        tiny_pipe.scheduler = before
    assert torch.equal(out["ddim"], out["ab1"]) and not torch.allclose(out["ddim"], out["ab4"])


def test_unknown_setting_fails_before_compute(multistep, tmp_path):
    with pytest.raises(SystemExit, match="unknown settings"):
        multistep.main(["--only", "pndm 7", "--out", str(tmp_path / "x.json")], pipe=object())
    with pytest.raises(SystemExit, match="--stiffness-prompts"):
        multistep.main(["--n", "4", "--stiffness-prompts", "5", "--out", str(tmp_path / "x.json")], pipe=object())
