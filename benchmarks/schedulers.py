"""Solvers x guidance on sd-mini: PNDM (SD 1.5's solver) against DDIM (sd-mini's), and the others at w = 7.5.

The measurement behind notebook 05's section 7, at a size the notebook cannot afford. Held-out
prompts (``scoring.eval_prompts``, world seed 999; prompt i from seed i, the same seeds for every
setting), 25 steps, each solver built by ``sdlearn.schedulers.make_scheduler`` from the model's own
scheduler config (its ``timestep_spacing`` included), every picture made by
``sdlearn.sampling.sample`` and read by ``sdlearn.mini.scoring.adherence``.

* ``pndm`` and ``ddim`` at w in {1, 4, 7.5}: colour and background right, each with its 95 %
  Wilson interval;
* the paired comparison per w and key: the prompts only DDIM gets right, those only PNDM gets
  right, and McNemar's exact test (a two-sided sign test over those prompts: under "no
  difference" each is a coin toss);
* ``--others`` (default euler, dpm++, unipc, lms, euler_a) at w = 7.5 only, each against DDIM the
  same way.

Shape is not scored: sd-mini names the asked shape in only 16 % of its pictures at w = 7.5
(``behaviour.json``), too few prompts for a paired comparison to say much.

Usage (from the repository root):

    python benchmarks/schedulers.py --n 96        # writes benchmarks/results/schedulers.json

Introduced in notebooks/05_schedulers.ipynb.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch
from scipy.stats import binomtest

from behaviour import LEVEL, proportion  # sibling script: Wilson intervals
from common import ROOT, load_model, run_info, save_json  # benchmarks/common.py (the script's own folder is on sys.path)

GUIDANCES = (1.0, 4.0, 7.5)
PAIR = ("pndm", "ddim")
OTHERS = ("euler", "dpm++", "unipc", "lms", "euler_a")
KEYS = ("colour", "background")


def run_setting(pipe: Any, scenes: list, name: str, w: float, steps: int, batch: int) -> dict:
    """``scoring.adherence`` of solver ``name`` at guidance ``w`` over ``scenes`` (prompt i: seed i)."""
    from sdlearn.device import make_generator
    from sdlearn.mini.scoring import adherence
    from sdlearn.sampling import sample
    from sdlearn.schedulers import make_scheduler

    original = pipe.scheduler
    pipe.scheduler = make_scheduler(original, name)
    try:
        def generate(batch_texts: list[str], seeds: list[int]) -> list:
            return sample(pipe, batch_texts, num_inference_steps=steps, guidance_scale=w,
                          generator=[make_generator(k) for k in seeds])

        with torch.inference_mode():
            return adherence(generate, scenes, batch_size=batch)
    finally:
        pipe.scheduler = original


def mcnemar(a: list, b: list) -> dict:
    """Paired comparison of two solvers' per-prompt flags (None: not asked, left out):
    ``a_only``, ``b_only`` and McNemar's exact two-sided p (binomial sign test over the
    discordant prompts; 1.0 when there are none)."""
    a_only = sum(bool(x) and not y for x, y in zip(a, b) if x is not None and y is not None)
    b_only = sum(bool(y) and not x for x, y in zip(a, b) if x is not None and y is not None)
    n = a_only + b_only
    return {"a_only": a_only, "b_only": b_only, "p": round(float(binomtest(a_only, n, 0.5).pvalue), 4) if n else 1.0}


def main(argv: list[str] | None = None, pipe: Any = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini")
    ap.add_argument("--n", type=int, default=96, help="held-out prompts per setting")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--others", default=",".join(OTHERS),
                    help="comma-separated solvers measured at w = 7.5 only ('' for none)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "schedulers.json")
    args = ap.parse_args(argv)
    others = [s for s in args.others.split(",") if s]

    from sdlearn.mini import scoring

    if pipe is None:
        pipe = load_model(args.model, args.threads)
    scenes = scoring.eval_prompts(args.n)
    t0 = time.time()
    flags, settings = {}, []
    plan = [(name, w) for w in GUIDANCES for name in PAIR] + [(name, 7.5) for name in others]
    for name, w in plan:
        t1 = time.time()
        res = run_setting(pipe, scenes, name, w, args.steps, args.batch)
        flags[name, w] = {k: [r[f"{k}_ok"] for r in res["rows"]] for k in KEYS}
        entry = {"scheduler": name, "w": w, **{k: proportion(flags[name, w][k]) for k in KEYS},
                 "seconds_per_picture": round((time.time() - t1) / len(scenes), 3)}
        settings.append(entry)
        print(f"{name:8s} w={w:<4g} " + "  ".join(f"{k} {entry[k]['value']} {entry[k]['ci']}" for k in KEYS)
              + f"  {entry['seconds_per_picture']} s/picture", flush=True)

    def versus(a: str, b: str, w: float) -> dict:
        out = {}
        for k in KEYS:
            m = mcnemar(flags[a, w][k], flags[b, w][k])
            va, vb = proportion(flags[a, w][k])["value"], proportion(flags[b, w][k])["value"]
            out[k] = {f"{a}_only": m["a_only"], f"{b}_only": m["b_only"], "mcnemar_p": m["p"],
                      "difference": None if va is None or vb is None else round(va - vb, 4)}
        return out

    paired = {f"{w:g}": versus("ddim", "pndm", w) for w in GUIDANCES}
    against_ddim = {name: versus(name, "ddim", 7.5) for name in others}
    for w, d in paired.items():
        print(f"w={w}: " + "  ".join(f"{k}: ddim only {v['ddim_only']}, pndm only {v['pndm_only']}, "
                                      f"p = {v['mcnemar_p']:.3f}" for k, v in d.items()))
    for name, d in against_ddim.items():
        print(f"{name} vs ddim at w=7.5: " + "  ".join(
            f"{k}: {name} only {v[name + '_only']}, ddim only {v['ddim_only']}, p = {v['mcnemar_p']:.3f}"
            for k, v in d.items()))
    result = {"benchmark": "schedulers", "model": args.model, "n_prompts": args.n, "steps": args.steps,
              "default_scheduler": type(pipe.scheduler).__name__,
              "timestep_spacing": pipe.scheduler.config.get("timestep_spacing"), "batch": args.batch,
              "intervals": f"{LEVEL:.0%} Wilson intervals; paired: McNemar's exact test (two-sided sign test "
                           "over the prompts exactly one solver gets right)",
              "settings": settings,
              "pndm_vs_ddim": {"what": "difference = ddim - pndm share, same prompts and seeds", "by_w": paired},
              "others_vs_ddim_at_7.5": {"what": "difference = solver - ddim share, same prompts and seeds",
                                        "by_solver": against_ddim},
              **run_info(t0, args.threads)}
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
