"""What every benchmark script shares: where and how its results are written."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def save_json(out: Path, result: dict, indent: int = 1) -> None:
    """Write ``result`` to ``out`` (folders created) and say where it went."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out}")


def run_info(t0: float, threads: int | None) -> dict:
    """Where a result came from: wall seconds since ``t0`` (``time.time()``), torch and python
    versions, torch threads."""
    import platform
    import time

    import torch

    return {"seconds": round(time.time() - t0, 1), "torch": torch.__version__,
            "python": platform.python_version(), "threads": threads}


def load_model(model: str, threads: int | None = None) -> Any:
    """``sdlearn.models.load_pipeline(model)`` (a registry name or a diffusers folder), quiet, on
    ``threads`` torch threads if given."""
    import torch

    from sdlearn.models import load_pipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = load_pipeline(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe
