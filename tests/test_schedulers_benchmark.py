"""benchmarks/schedulers.py: McNemar's exact test against its closed form, and one short run on
the random-weight "tiny" model (keys and pairing only; the figures mean nothing)."""
import json
import math
import sys

import pytest


@pytest.fixture(scope="module")
def schedulers(load_benchmark):
    yield load_benchmark("schedulers")
    sys.modules.pop("schedulers_benchmark", None)


def test_mcnemar_exact(schedulers):
    a = [True] * 15 + [False] * 3 + [True] * 5 + [None]
    b = [False] * 15 + [True] * 3 + [True] * 5 + [True]  # 15 only a, 3 only b, 5 both, 1 not asked
    m = schedulers.mcnemar(a, b)
    # two-sided exact sign test over the 18 discordant prompts: 2 * P(X <= 3), X ~ Bin(18, 1/2)
    p = 2 * sum(math.comb(18, k) for k in range(4)) / 2 ** 18
    assert (m["a_only"], m["b_only"]) == (15, 3) and m["p"] == pytest.approx(p, abs=1e-4)
    assert schedulers.mcnemar([True, False], [True, False]) == {"a_only": 0, "b_only": 0, "p": 1.0}


def test_short_run_on_tiny(schedulers, tiny_pipe, tmp_path):
    before = tiny_pipe.scheduler
    out = tmp_path / "s.json"
    res = schedulers.main(["--n", "2", "--steps", "2", "--batch", "2", "--others", "euler", "--model", "tiny",
                           "--out", str(out)], pipe=tiny_pipe)
    assert tiny_pipe.scheduler is before  # restored
    saved = json.loads(out.read_text())
    assert saved["n_prompts"] == 2 and saved == json.loads(json.dumps(res))
    got = [(s["scheduler"], s["w"]) for s in saved["settings"]]
    assert got == [(n, w) for w in schedulers.GUIDANCES for n in schedulers.PAIR] + [("euler", 7.5)]
    for s in saved["settings"]:
        for key in schedulers.KEYS:
            assert {"value", "k", "n", "ci"} <= set(s[key]) and s[key]["n"] <= 2
    assert set(saved["pndm_vs_ddim"]["by_w"]) == {"1", "4", "7.5"}
    d = saved["pndm_vs_ddim"]["by_w"]["7.5"]["colour"]
    assert {"ddim_only", "pndm_only", "mcnemar_p", "difference"} == set(d) and 0 <= d["mcnemar_p"] <= 1
    assert "euler_only" in saved["others_vs_ddim_at_7.5"]["by_solver"]["euler"]["colour"]
