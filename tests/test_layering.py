"""The package's layering: the course at the top of ``sdlearn``, the sd-mini factory apart."""
from __future__ import annotations

import ast
from pathlib import Path

import sdlearn


def test_the_course_never_imports_the_factory_or_training():
    """Layering: no top-level module imports ``sdlearn.mini``, and no inference module imports
    the training core (only the factory's recipes do)."""
    root = Path(sdlearn.__file__).parent
    for path in root.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        targets |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(t.startswith((".mini", "sdlearn.mini")) for t in targets), path.name
        if path.stem != "training":
            assert not any(t in (".training", "sdlearn.training") for t in targets), path.name
