"""The explorer dashboard in a real browser: JupyterLab on localhost, Debian's chromium via Playwright.

Runs notebooks/10_explorer.ipynb top to bottom in JupyterLab, drags the guidance slider (the
picture must change: "render on change"), then unticks "render on change", drags it again (the
picture must *not* change), clicks Generate (now it must). A screenshot of the page is saved
under ``$SDLEARN_TEST_OUTPUT`` (default ``test-output/``) as ``browser/10_explorer.png``.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``; ``.ci/run`` installs it) and the
``playwright`` package pinned in the ``dev`` extra: Playwright drives the browser through the
Chrome DevTools Protocol, so its release should match the browser's — 1.62.0 bundles Chromium
151 and is tested against stable Chrome 150, which is Debian 12's chromium (150.0.7871).
No browser is downloaded. Without chromium the test is skipped, except on CI (``CI`` set),
where it fails.

Run alone: ``make test-browser``.

The test also saves the dashboard alone, shrunk (``browser/10_dashboard.png``, under 150 kB). That
picture is what notebook 10 shows readers without a kernel, as a markdown cell attachment:
after a browser run, ``python tests/test_explorer_browser.py`` puts the new screenshot into the
notebook (``tests/test_explorer.py`` checks the one committed there).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "10_explorer.ipynb"
OUTPUT = Path(os.environ.get("SDLEARN_TEST_OUTPUT", ROOT / "test-output")) / "browser"

FIGURE = "10_dashboard.png"  # the cropped dashboard; embedded into the notebook (see the end of this file)
MAX_FIGURE_BYTES = 150_000

pytestmark = pytest.mark.browser


def small_png(png: bytes, width: int = 900) -> bytes:
    """A screenshot shrunk to at most ``width`` pixels wide and 256 colours: a light PNG for the notebook."""
    import io

    from PIL import Image

    im = Image.open(io.BytesIO(png)).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    im.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, "PNG", optimize=True)
    return out.getvalue()


def _require_browser():
    missing = [what for what, ok in (("/usr/bin/chromium (apt-get install chromium)", CHROMIUM.exists()),
                                     ("the playwright package", _has_playwright())) if not ok]
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    """A JupyterLab server on localhost serving a copy of notebook 10, with isolated settings."""
    _require_browser()
    work = tmp_path / "notebooks"
    work.mkdir()
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)  # the committed notebook is never autosaved over
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    # Keep every cell in the DOM (JupyterLab 4 may virtualise cells scrolled out of view).
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    notes = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    notes.mkdir(parents=True)  # no "get Jupyter news?" toast over the screenshot
    (notes / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    port, token = _free_port(), "sdlearn-browser-test"
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--ServerApp.token={token}", f"--ServerApp.root_dir={work}",
           "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands like the menu does
           "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "getuid") and os.getuid() == 0:
        cmd.append("--allow-root")
    log = (tmp_path / "lab.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (tmp_path / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _kernel_idle(page, timeout_ms: int) -> None:
    page.wait_for_function(
        """() => {
            const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            const ctx = w && w.sessionContext;
            return ctx && ctx.session && ctx.session.kernel && ctx.kernelDisplayStatus === 'idle';
        }""", timeout=timeout_ms)


def _drag(page, slider, dx: float) -> None:
    """Drag the slider's handle by ``dx`` pixels with the mouse (ipywidgets 8: noUiSlider; 7: jQuery UI)."""
    handle = slider.locator(".noUi-handle, .ui-slider-handle").first
    handle.scroll_into_view_if_needed()
    box = handle.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=8)
    page.mouse.up()


def _render_no(status_text: str) -> int:
    assert status_text.startswith("render "), status_text  # an error would be shown here instead
    return int(status_text.split(":")[0].split()[1])


def test_explorer_dashboard_in_chromium(lab):
    from playwright.sync_api import sync_playwright

    base, token = lab
    OUTPUT.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-extensions",
                  "--disable-background-networking", "--no-first-run", "--disable-sync"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            _kernel_idle(page, 90_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            status = page.locator(".sdlearn-status").first
            status.wait_for(timeout=120_000)
            _kernel_idle(page, 180_000)
            errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
            assert "Traceback" not in " ".join(errors.all_inner_texts())
            picture = page.locator("img.sdlearn-picture").first
            picture.scroll_into_view_if_needed()
            n = _render_no(status.inner_text())
            assert n == 2  # the first picture + the notebook's own `dash.guidance.value = 12.0`
            first = picture.screenshot()
            # The dashboard as the notebook leaves it: the picture for readers without a kernel.
            dashboard = page.locator(".jp-OutputArea-output:has(.sdlearn-picture)").first
            dashboard.scroll_into_view_if_needed()
            figure = OUTPUT / FIGURE
            figure.write_bytes(small_png(dashboard.screenshot()))

            # 1. "render on change": dragging the guidance slider re-renders by itself.
            guidance = page.locator(".sdlearn-guidance").first
            readout = guidance.locator(".widget-readout").first
            g0 = readout.inner_text()
            _drag(page, guidance, -60)
            page.wait_for_function(f"() => document.querySelector('.sdlearn-status').innerText.startsWith('render {n + 1}:')",
                                   timeout=30_000)
            assert readout.inner_text() != g0
            moved = picture.screenshot()
            assert moved != first, "the picture did not change after the guidance slider moved"

            # 2. Without "render on change", the slider alone changes nothing; Generate does.
            page.locator(".sdlearn-auto input[type=checkbox]").first.click()
            _drag(page, guidance, -60)
            page.wait_for_timeout(1500)
            assert _render_no(status.inner_text()) == n + 1 and picture.screenshot() == moved
            generate = page.locator("button.sdlearn-generate").first
            assert generate.is_enabled()
            # Record whether the browser ever shows the button disabled while the kernel works.
            page.evaluate("""() => {
                const b = document.querySelector('button.sdlearn-generate');
                window.__sawDisabled = false;
                new MutationObserver(() => { if (b.disabled) window.__sawDisabled = true; })
                    .observe(b, {attributes: true});
            }""")
            generate.click()
            page.wait_for_function(f"() => document.querySelector('.sdlearn-status').innerText.startsWith('render {n + 2}:')",
                                   timeout=30_000)
            assert page.evaluate("() => window.__sawDisabled"), "Generate was not disabled while running"
            assert generate.is_enabled()  # re-enabled after the run
            assert picture.screenshot() != moved, "Generate did not change the picture"
            shot = OUTPUT / "10_explorer.png"
            page.locator(".sdlearn-picture").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"\nbrowser test: {time.time() - t_start:.1f} s in the browser; screenshot {shot}; "
          f"dashboard {figure} ({figure.stat().st_size / 1e3:.0f} kB)")
    assert figure.stat().st_size < MAX_FIGURE_BYTES


def embed_figure(png: Path = OUTPUT / FIGURE, notebook: Path = NOTEBOOK) -> int:
    """Put ``png`` into the notebook's markdown cell that shows ``attachment:10_dashboard.png``."""
    import base64

    import nbformat

    data = png.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) < MAX_FIGURE_BYTES, (png, len(data))
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "markdown" and f"attachment:{FIGURE}" in c.source]
    assert len(cells) == 1, f"want one markdown cell showing attachment:{FIGURE}, found {len(cells)}"
    cells[0]["attachments"] = {FIGURE: {"image/png": base64.b64encode(data).decode("ascii")}}
    nbformat.write(nb, notebook)
    return len(data)


if __name__ == "__main__":
    print(f"{NOTEBOOK.name}: embedded {OUTPUT / FIGURE} ({embed_figure() / 1e3:.0f} kB)")
