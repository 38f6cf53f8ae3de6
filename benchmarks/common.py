"""What every benchmark script shares: where and how its results are written."""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def save_json(out: Path, result: dict, indent: int = 1) -> None:
    """Write ``result`` to ``out`` (folders created) and say where it went."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=indent) + "\n")
    print(f"\nwrote {out.relative_to(ROOT) if out.resolve().is_relative_to(ROOT) else out}")
