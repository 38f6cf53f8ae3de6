"""Back-links that check themselves: every public function and class of ``sdlearn`` names the
notebook that introduces it, and that notebook exists and really uses it.

A docstring's last line ``Introduced in notebooks/NN_name.ipynb.`` is the reader's way from the
code to the lesson; these tests keep it from drifting when code moves or a notebook changes.
Only command-line entry points (``main`` and the ``__main__`` module) are exempt.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import json
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

import sdlearn

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"
BACKLINK = re.compile(r"Introduced in notebooks/(\d\d_[A-Za-z0-9_]+\.ipynb)\.")
EXEMPT_NAMES = {"main"}  # CLI entry points


def _modules() -> list[str]:
    names = ["sdlearn"] + [m.name for m in pkgutil.walk_packages(sdlearn.__path__, "sdlearn.")]
    return sorted(n for n in names if n.rsplit(".", 1)[-1] != "__main__")


def _public(module_name: str) -> list[tuple[str, object]]:
    """Functions and classes defined in the module itself (not imported into it), by name."""
    module = importlib.import_module(module_name)
    return [(name, obj) for name, obj in vars(module).items()
            if not name.startswith("_") and name not in EXEMPT_NAMES
            and (inspect.isfunction(obj) or inspect.isclass(obj))
            and getattr(obj, "__module__", None) == module_name]


def _collect() -> tuple[list[tuple[str, object]], dict[str, str]]:
    objects, broken = [], {}
    for m in _modules():
        try:
            objects += [(f"{m}.{name}", obj) for name, obj in _public(m)]
        except Exception as err:  # reported by test_every_module_imports, not as a collection error
            broken[m] = f"{type(err).__name__}: {err}"
    return objects, broken


OBJECTS, BROKEN = _collect()


@cache
def _identifiers(notebook: str) -> frozenset[str]:
    """Every identifier the notebook's code cells use: names, attributes, imported names."""
    from IPython.core.inputtransformer2 import TransformerManager

    nb = json.loads((NB_DIR / notebook).read_text(encoding="utf-8"))
    found: set[str] = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        # %magics and !shell lines become plain Python calls first, as IPython runs them.
        tree = ast.parse(TransformerManager().transform_cell("".join(cell["source"])))
        for node in ast.walk(tree):
            if isinstance(node, ast.Name):
                found.add(node.id)
            elif isinstance(node, ast.Attribute):
                found.add(node.attr)
            elif isinstance(node, ast.alias):
                found.add(node.name.rsplit(".", 1)[-1])
    return frozenset(found)


def test_every_module_imports():
    assert not BROKEN, BROKEN


def test_there_is_something_to_check():
    assert len(OBJECTS) > 100
    assert "sdlearn.sampling.sample" in dict(OBJECTS)


@pytest.mark.parametrize("qualname, obj", OBJECTS, ids=[q for q, _ in OBJECTS])
def test_backlink(qualname, obj):
    doc = inspect.getdoc(obj) or ""
    last = doc.strip().splitlines()[-1].strip() if doc.strip() else ""
    m = BACKLINK.fullmatch(last)
    assert m, f"{qualname}: the docstring's last line must be 'Introduced in notebooks/NN_name.ipynb.', got {last!r}"
    notebook = m.group(1)
    assert (NB_DIR / notebook).exists(), f"{qualname} points at {notebook}, which does not exist"
    name = qualname.rsplit(".", 1)[-1]
    assert name in _identifiers(notebook), f"{qualname}: {notebook}'s code never uses {name}"

