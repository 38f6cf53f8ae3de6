"""Do PNDM and LMS fail on sd-mini from their step size? Their adherence as the steps grow.

At 25 steps and guidance 7.5, PNDM (SD 1.5's own scheduler) and LMS fall far behind DDIM on sd-mini
(`behaviour.py` row 8, `schedulers.py`). Both are linear multistep solvers: each step extrapolates
from the predictions of earlier steps. If the failure is that extrapolation over steps too long for
how fast sd-mini's guided prediction changes, it should shrink as the steps get shorter; if the
solver instead converged to another answer, more steps would not help. This probe measures colour,
shape and "both right" for DDIM at 25 steps (the reference) and for PNDM and LMS at 25, 50 and 100
steps, and at 25 steps for PNDM with other timestep spacings and at a lower guidance, and for LMS on
Karras sigmas (diffusers' `use_karras_sigmas`, denser steps at low noise). Same held-out prompts
and seeds (prompt i: seed i) for every setting; 95 % Wilson intervals.

    python benchmarks/multistep.py --n 96 --out benchmarks/results/multistep.json
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from behaviour import proportion  # sibling script: a share with its Wilson interval
from common import ROOT, load_model, run_info, save_json  # benchmarks/common.py

# (label, scheduler, steps, guidance, scheduler overrides)
SETTINGS = [
    ("ddim 25", "ddim", 25, 7.5, {}),
    ("pndm 25", "pndm", 25, 7.5, {}),
    ("pndm 50", "pndm", 50, 7.5, {}),
    ("pndm 100", "pndm", 100, 7.5, {}),
    ("pndm 25, trailing", "pndm", 25, 7.5, {"timestep_spacing": "trailing"}),
    ("pndm 25, linspace", "pndm", 25, 7.5, {"timestep_spacing": "linspace"}),
    ("pndm 25, w = 4", "pndm", 25, 4.0, {}),
    ("lms 25", "lms", 25, 7.5, {}),
    ("lms 50", "lms", 50, 7.5, {}),
    ("lms 25, karras", "lms", 25, 7.5, {"use_karras_sigmas": True}),
]


def measure(pipe: Any, prompts: list, label: str, name: str, steps: int, guidance: float,
            overrides: dict, batch: int = 24) -> dict:
    """Colour, shape and both right for one setting, over ``prompts`` (seed i for prompt i)."""
    from sdlearn.device import make_generator
    from sdlearn.mini.scoring import adherence
    from sdlearn.sampling import sample
    from sdlearn.schedulers import make_scheduler

    default = pipe.scheduler
    pipe.scheduler = make_scheduler(default, name, **overrides)
    try:
        def generate(texts, seeds):
            return sample(pipe, texts, num_inference_steps=steps, guidance_scale=guidance,
                          generator=[make_generator(s) for s in seeds])

        t0 = time.perf_counter()
        rows = adherence(generate, prompts, batch_size=batch)["rows"]
    finally:
        pipe.scheduler = default
    # "both": over the prompts that ask for a colour and a shape (behaviour.py's row 8 counts a
    # prompt that asks for only one of them too)
    both = [bool(r["colour_ok"] and r["shape_ok"]) for r in rows if None not in (r["colour_ok"], r["shape_ok"])]
    return {"label": label, "scheduler": name, "steps": steps, "guidance": guidance, "overrides": overrides,
            "colour": proportion(r["colour_ok"] for r in rows), "shape": proportion(r["shape_ok"] for r in rows),
            "both": proportion(both),
            "seconds_per_picture": round((time.perf_counter() - t0) / len(prompts), 3)}


def main(argv: list[str] | None = None, pipe: Any = None) -> dict:
    from sdlearn.mini.scoring import eval_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help="registry name or diffusers folder")
    ap.add_argument("--n", type=int, default=96, help="held-out prompts")
    ap.add_argument("--only", nargs="*", default=None, help="labels of SETTINGS to run (default: all)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multistep.json")
    args = ap.parse_args(argv)
    settings = [s for s in SETTINGS if args.only is None or s[0] in args.only]
    unknown = set(args.only or ()) - {s[0] for s in SETTINGS}
    if unknown:  # before any compute
        raise SystemExit(f"unknown settings {sorted(unknown)}; known: {[s[0] for s in SETTINGS]}")
    t0 = time.time()
    pipe = pipe if pipe is not None else load_model(args.model, args.threads)
    pipe.set_progress_bar_config(disable=True)
    prompts = eval_prompts(args.n)
    results = []
    f = lambda x: f"{x['value']:.0%} [{x['ci'][0]:.0%}, {x['ci'][1]:.0%}]"  # noqa: E731
    for label, name, steps, guidance, overrides in settings:
        r = measure(pipe, prompts, label, name, steps, guidance, overrides)
        results.append(r)
        print(f"{label:18s} colour {f(r['colour']):16s} shape {f(r['shape']):16s} both {f(r['both'])}", flush=True)
    result = {"benchmark": "multistep", "model": args.model, "n_prompts": args.n,
              "intervals": "95% Wilson", "settings": results, **run_info(t0, args.threads)}
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
