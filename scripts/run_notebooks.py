"""Execute notebooks top to bottom in place (``make notebooks``) and normalise them.

Each notebook runs in a fresh kernel with ``notebooks/`` as working directory, on the default
model (``$SDLEARN_MODEL``, else the bundled sd-mini) and the CPU; then ``nbstripout
--keep-output --keep-count`` drops volatile metadata so diffs show only real changes.
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def run(path: Path, timeout: int = 1200) -> float:
    nb = nbformat.read(path, as_version=4)
    t0 = time.time()
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count", str(path)], check=True)
    return time.time() - t0


if __name__ == "__main__":
    for p in sys.argv[1:]:
        dt = run(Path(p))
        print(f"{p}: {dt:.1f} s, {Path(p).stat().st_size / 1e3:.0f} kB")
