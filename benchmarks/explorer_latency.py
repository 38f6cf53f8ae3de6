"""Dashboard re-render latency: how long after a control is released is the new picture shown?

Builds ``sdlearn.widgets.explorer`` on a model and changes each control ``--repeats`` times
(alternating between two values), timing the whole observer chain that a slider release runs in
the kernel: settings check, generation with step recording and attention capture, PNG encoding,
the two step-scrubber decodes and the attention overlay. Token and step changes redraw without
generating. Target (issue 6): under 1 s per change with sd-mini on a CPU. Browser-side drawing is
not included (the browser test measures the round trip once).

Usage (from the repository root):

    python benchmarks/explorer_latency.py                 # mini, 1 thread
    python benchmarks/explorer_latency.py --threads 2 --out /tmp/lat.json

Writes ``benchmarks/results/explorer_latency.json`` and prints a Markdown table.

Introduced in notebooks/10_explorer.ipynb.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from common import ROOT, save_json  # benchmarks/common.py (the script's own folder is on sys.path)


# control -> two values to alternate between (the dashboard starts at the first of neither)
CHANGES = {
    "token": ("circle", "red"), "step": (5, 10), "guidance": (10.0, 5.0), "seed": (1, 2), "steps": (25, 15),
    "negative_prompt": ("red", "blue"), "scheduler": ("euler", "dpm++"),
    "size": None,  # two of the model's own size_options, chosen in main()
    "strength": (0.8, 0.5), "prompt": ("a blue square", "a green star"),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "explorer_latency.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sdlearn.explorer import Settings, size_options
    from sdlearn.models import load_pipeline
    from sdlearn.widgets import explorer

    pipe = load_pipeline(args.model)
    pipe.set_progress_bar_config(disable=True)
    t0 = time.perf_counter()
    w = explorer(pipe, Settings(prompt="a red circle on a blue background", num_inference_steps=20))
    first = time.perf_counter() - t0
    rows = {}
    opts = size_options(pipe)  # two sizes other than the native one (sd-mini: 160 and 96 px)
    changes = {**CHANGES, "size": (opts[2], opts[0])}
    for name, values in changes.items():
        if name == "strength":
            w.mode.value = "img2img"
        control = getattr(w, name)
        initial = control.value
        control.value = values[1]  # warm-up: a scheduler or size seen for the first time
        times = []
        for k in range(args.repeats):
            t = time.perf_counter()
            control.value = values[k % 2]
            times.append(time.perf_counter() - t)
            assert not w.status.value.startswith("error"), w.status.value
        control.value = initial  # the next control is measured from the defaults again
        if name == "strength":
            w.mode.value = "txt2img"
        rows[name] = {"median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
    result = {"model": args.model, "threads": args.threads, "repeats": args.repeats,
              "defaults": "20 steps, guidance 7.5, native size, the model's scheduler",
              "first_render_s": round(first, 3), "changes": rows, "renders": w.renders,
              "torch": torch.__version__, "python": platform.python_version(),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} thread(s)"}
    print(f"| control ({args.model}, {args.threads} thread(s)) | median s | max s |\n|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['median_s']:.3f} | {r['max_s']:.3f} |")
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
