import numpy as np
from PIL import Image

from sdlearn.__main__ import main


def test_generate_writes_png(tmp_path, capsys):
    out = tmp_path / "x.png"
    assert main(["generate", "a red circle", "-o", str(out), "--model", "tiny", "--steps", "2", "--size", "64"]) == 0
    img = Image.open(out)
    assert img.size == (64, 64) and np.asarray(img).std() > 0
    assert "wrote" in capsys.readouterr().out


def test_bad_input_fails_before_loading(tmp_path, capsys):
    assert main(["generate", "x", "--size", "30", "-o", str(tmp_path / "a.png")]) == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert main(["generate", "x", "-o", str(tmp_path / "nope" / "a.png")]) == 2
    assert main(["generate", "x", "-o", str(tmp_path / "a.jpg")]) == 2
    assert not list(tmp_path.iterdir())  # nothing written


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    assert "sd15" in capsys.readouterr().out
