"""benchmarks/noise_mean.py on the random-weight "tiny" model: its keys and its counts."""
import sys

import pytest


@pytest.fixture(scope="module")
def noise_mean(load_benchmark):
    yield load_benchmark("noise_mean")
    sys.modules.pop("noise_mean_benchmark", None)


def test_probe_on_tiny(noise_mean, tiny_pipe, tmp_path):
    res = noise_mean.main(["--seeds", "1", "--out", str(tmp_path / "n.json")], pipe=tiny_pipe)
    assert (tmp_path / "n.json").exists() and len(res["readings"]) == 1 and len(res["readings"][0]) == 8
    assert 0 <= res["background_as_asked"] <= 1 and 1 <= res["distinct_backgrounds"] <= 8
    assert res["noise_mean_std"] == 1 / tiny_pipe.unet.config.sample_size
