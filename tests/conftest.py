import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tests run two xdist workers on two cores: one torch thread each avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def quiet_pipeline():
    """``load_pipeline`` with the per-step progress bar off (noise in test output)."""
    from sdlearn.models import load_pipeline

    def make(name: str, task: str | None = None):
        pipe = load_pipeline(name, task=task)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    return make


@pytest.fixture(scope="session")
def tiny_pipe(quiet_pipeline):
    return quiet_pipeline("tiny")


@pytest.fixture(scope="session")
def load_benchmark():
    """``load_benchmark(name)``: import ``benchmarks/<name>.py`` (a script, not a package) as module ``<name>_benchmark``;
    it imports its sibling ``common.py``, so the folder is on the path while it loads."""
    import importlib.util
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        sys.path.insert(0, str(bench))
        try:
            spec = importlib.util.spec_from_file_location(f"{name}_benchmark", bench / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod  # dataclasses look their module up there
            spec.loader.exec_module(mod)
        finally:
            sys.path.remove(str(bench))
        return mod

    return load
