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


class CountCalls:
    """Counts forward calls of the UNet, the text encoder and both halves of the VAE: bad input
    must be refused while this stays at 0 (no compute)."""

    def __init__(self, pipe):
        self.modules, self.calls = (pipe.unet, pipe.text_encoder, pipe.vae.encoder, pipe.vae.decoder), []

    def __enter__(self):
        self.hooks = [m.register_forward_pre_hook(lambda *a: self.calls.append(1)) for m in self.modules]
        return self.calls

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


@pytest.fixture(scope="session")
def count_calls():
    """``with count_calls(pipe) as calls: ...``; ``calls`` stays empty unless a model ran."""
    return CountCalls


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
