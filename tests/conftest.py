import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
# Tests run two xdist workers on two cores: one torch thread each avoids oversubscription.
torch.set_num_threads(1)
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_pipe():
    from sdlearn.models import load_pipeline

    pipe = load_pipeline("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe
