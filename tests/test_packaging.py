"""environment.yml and pyproject.toml must list the same dependencies."""
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_matches_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    yml = (ROOT / "environment.yml").read_text()
    pip_block = yml.split("- pip:", 1)[1]
    listed = [m.strip() for m in re.findall(r"^\s+- (.+)$", pip_block, flags=re.M)]
    assert sorted(listed) == sorted(deps)


def test_no_torchvision_anywhere():
    for f in ("pyproject.toml", "environment.yml", "Makefile", ".ci/run"):
        assert "torchvision" not in (ROOT / f).read_text().replace("Never install torchvision", "").replace(
            "never add torchvision", "").replace("Never add torchvision", ""), f


def test_package_data_ships_tokenizer_and_licence():
    tok = ROOT / "sdlearn" / "data" / "tokenizer"
    for name in ("vocab.json", "merges.txt", "LICENSE-CLIP.txt"):
        assert (tok / name).exists()
    assert "MIT License" in (tok / "LICENSE-CLIP.txt").read_text()


def test_package_data_globs_cover_the_shipped_models():
    """Every file under sdlearn/data/ that git tracks matches a package-data glob, so a wheel
    carries sd-mini and its variants, not only an editable install."""
    import fnmatch
    import subprocess

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["sdlearn"]
    tracked = subprocess.run(["git", "ls-files", "sdlearn/data"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    rel = [t.removeprefix("sdlearn/") for t in tracked]
    missing = [r for r in rel if not any(fnmatch.fnmatchcase(r, g) and r.count("/") == g.count("/") for g in globs)]
    assert not missing, missing
    assert any(r.startswith("data/sd-mini-depth/unet/") for r in rel) and any(r.startswith("data/sd-mini-inpaint/unet/") for r in rel)
