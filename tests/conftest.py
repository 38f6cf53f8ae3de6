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
