"""The package's layering: the course at the top of ``sdlearn``, the sd-mini factory apart."""
from __future__ import annotations

import ast
from pathlib import Path

import sdlearn


def test_the_course_never_imports_the_factory_or_training():
    """Layering: no top-level module imports ``sdlearn.mini``, and no inference module imports
    the training core (only the recipes do: the factory's and notebook 12's). The personalisation
    recipes work on any SD pipeline, so they stay off the factory too."""
    root = Path(sdlearn.__file__).parent
    for path in [*root.glob("*.py"), *(root / "personalisation").glob("*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = {("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        targets |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(t.lstrip(".").startswith(("mini", "sdlearn.mini")) for t in targets), path.name
        if path.stem != "training" and path.parent == root:
            assert not any(t.lstrip(".") in ("training", "sdlearn.training") for t in targets), path.name
