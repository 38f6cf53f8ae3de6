"""benchmarks/multistep.py on the random-weight "tiny" model: its keys, its counts, its bad input."""
import sys

import pytest


@pytest.fixture(scope="module")
def multistep(load_benchmark):
    yield load_benchmark("multistep")
    sys.modules.pop("multistep_benchmark", None)


def test_settings_on_tiny(multistep, tiny_pipe, tmp_path):
    out, before = tmp_path / "m.json", tiny_pipe.scheduler
    res = multistep.main(["--n", "2", "--only", "ddim 25", "pndm 25, w = 4", "--out", str(out)], pipe=tiny_pipe)
    assert out.exists() and [s["label"] for s in res["settings"]] == ["ddim 25", "pndm 25, w = 4"]
    for s in res["settings"]:
        assert s["colour"]["n"] <= 2 and 0 <= s["both"]["k"] <= s["both"]["n"] <= 2
        assert s["both"]["k"] <= min(s["colour"]["k"], s["shape"]["k"])  # both right implies each right
    assert res["settings"][1]["guidance"] == 4.0 and tiny_pipe.scheduler is before  # the pipeline's own restored


def test_unknown_setting_fails_before_compute(multistep, tmp_path):
    with pytest.raises(SystemExit, match="unknown settings"):
        multistep.main(["--only", "pndm 7", "--out", str(tmp_path / "x.json")], pipe=object())
