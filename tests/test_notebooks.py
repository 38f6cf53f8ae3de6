"""Static checks of every committed notebook (nbval executes them separately)."""
import json
import re
from pathlib import Path

import pytest

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("*.ipynb"))


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).strip()]


def test_there_are_notebooks_with_unique_numbers():
    assert NOTEBOOKS
    numbers = [p.name[:2] for p in NOTEBOOKS]
    assert all(re.fullmatch(r"\d\d", n) for n in numbers), numbers
    assert len(set(numbers)) == len(numbers), numbers


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_run(path):
    assert path.stat().st_size <= 1_000_000, f"{path.name} is {path.stat().st_size} bytes (cap 1 MB)"
    nb = json.loads(path.read_text(encoding="utf-8"))
    text = json.dumps(nb)
    assert "colab-badge.svg" in text and f"notebooks/{path.name}" in text, "Open-in-Colab badge missing"
    code = _code_cells(nb)
    first = "".join(code[0]["source"])
    assert "google.colab" in first and "pip install" in first, "first code cell must be the guarded install"
    assert "sys.path" not in text, "notebooks import the installed package, never hack sys.path"
    counts = [c["execution_count"] for c in code]
    assert counts == list(range(1, len(code) + 1)), f"not one clean top-to-bottom run: {counts}"
    for c in code:
        for o in c.get("outputs", []):
            assert o["output_type"] != "error", f"error output in {path.name}"
            if o["output_type"] == "stream" and o["name"] == "stderr":
                s = "".join(o["text"])
                assert "FutureWarning" not in s and "DeprecationWarning" not in s, s[:300]
    for bad in ("/work/", "/root/", "/home/", "/tmp/"):
        assert bad not in text, f"{path.name} shows a machine path {bad}"
