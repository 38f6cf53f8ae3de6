"""Do PNDM and LMS fail on sd-mini from their step size? Their adherence as the steps grow.

At 25 steps and guidance 7.5, PNDM (SD 1.5's own scheduler) and LMS fall far behind DDIM on sd-mini
(`behaviour.py` row 8, `schedulers.py`). Both are linear multistep solvers: each step extrapolates
from the predictions of earlier steps. If the failure is that extrapolation over steps too long for
how fast sd-mini's guided prediction changes, it should shrink as the steps get shorter; if the
solver instead converged to another answer, more steps would not help. This probe measures colour,
shape and "both right" for DDIM at 25 steps (the reference) and for PNDM and LMS at 25, 50 and 100
steps, and at 25 steps for PNDM with other timestep spacings and at a lower guidance, and for LMS on
Karras sigmas (diffusers' `use_karras_sigmas`, denser steps at low noise), and both at w = 1. Same
held-out prompts and seeds (prompt i: seed i) for every setting; 95 % Wilson intervals.

Why the step size matters: PNDM's PLMS step is Adams-Bashforth of order 4 on the guided noise
prediction, fed to DDIM's update (DDIM itself is order 1, Euler). Each order is stable only up to a
step z = h * lambda (`sdlearn.schedulers.stability_limit`: 2, 1, 6/11, 3/10). Two readings test
that: "ab1 25" ... "ab4 25" run DDIM's update on Adams-Bashforth combinations of orders 1-4 (ab1 is
DDIM exactly, ab4 is PNDM without its start-up steps), and `stiffness` measures z at every DDIM
step (`sdlearn.schedulers.guided_stiffness`) at w = 1, 4 and 7.5 over the first 8 prompts.

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
    ("ddim 25, w = 1", "ddim", 25, 1.0, {}),
    ("pndm 25, w = 1", "pndm", 25, 1.0, {}),
    *((f"ab{k} 25", f"ab{k}", 25, 7.5, {}) for k in (1, 2, 3, 4)),
]
STIFFNESS_W = (1.0, 4.0, 7.5)


def adams_scheduler(pipe: Any, order: int) -> Any:
    """DDIM whose update is fed the Adams-Bashforth combination of the last ``order`` guided noise
    predictions (lower orders while fewer exist): order 1 is DDIM itself, order 4 PNDM's PLMS step."""
    from diffusers import DDIMScheduler

    from sdlearn.schedulers import ADAMS_BASHFORTH, make_scheduler

    class AdamsDDIM(DDIMScheduler):
        def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
            self.history: list = []
            super().set_timesteps(*args, **kwargs)

        def step(self, model_output: Any, timestep: Any, sample: Any, *args: Any, **kwargs: Any) -> Any:
            self.history = [model_output, *self.history][:order]  # newest first
            b = ADAMS_BASHFORTH[len(self.history)]
            combined = sum(c * e for c, e in zip(b, self.history, strict=True))
            return super().step(combined, timestep, sample, *args, **kwargs)

    return AdamsDDIM.from_config(make_scheduler(pipe, "ddim").config)


def stiffness(pipe: Any, prompts: list, guidance: float) -> dict:
    """z = h * sqrt(abar_t) * rho_t at every DDIM-25 step (means over ``prompts``, seed i for prompt
    i), with the steps past each Adams-Bashforth order's stability limit."""
    import numpy as np

    from sdlearn.device import make_generator
    from sdlearn.sampling import encode_text, initial_latents
    from sdlearn.schedulers import ADAMS_BASHFORTH, guided_stiffness, stability_limit

    texts = [p if isinstance(p, str) else p.caption for p in prompts]
    embeds = encode_text(pipe, texts, None, guidance_scale=7.5)  # [uncond; cond] at any w
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    latents = initial_latents(pipe, len(texts), size, size, embeds.dtype,
                              [make_generator(i) for i in range(len(texts))])
    rows = guided_stiffness(pipe, embeds, latents, guidance)
    z = np.array([r["z"] for r in rows])
    return {"guidance": guidance, "n_prompts": len(texts), "steps": [{k: round(v, 4) if isinstance(v, float) else v
                                                                     for k, v in r.items()} for r in rows],
            "median_z": round(float(np.median(z)), 4), "max_z": round(float(z.max()), 4),
            "steps_past_limit": {str(k): int((z > stability_limit(k)).sum()) for k in ADAMS_BASHFORTH}}


def measure(pipe: Any, prompts: list, label: str, name: str, steps: int, guidance: float,
            overrides: dict, batch: int = 24) -> dict:
    """Colour, shape and both right for one setting, over ``prompts`` (seed i for prompt i)."""
    from sdlearn.device import make_generator
    from sdlearn.mini.scoring import adherence
    from sdlearn.sampling import sample
    from sdlearn.schedulers import make_scheduler

    default = pipe.scheduler
    pipe.scheduler = adams_scheduler(default, int(name[2:])) if name.startswith("ab") \
        else make_scheduler(default, name, **overrides)
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
    ap.add_argument("--stiffness-prompts", type=int, default=8, help="prompts for the stiffness reading (0: skip)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multistep.json")
    args = ap.parse_args(argv)
    settings = [s for s in SETTINGS if args.only is None or s[0] in args.only]
    unknown = set(args.only or ()) - {s[0] for s in SETTINGS}
    if unknown:  # before any compute
        raise SystemExit(f"unknown settings {sorted(unknown)}; known: {[s[0] for s in SETTINGS]}")
    if not 0 <= args.stiffness_prompts <= args.n:
        raise SystemExit(f"--stiffness-prompts must be in 0..--n ({args.n}), got {args.stiffness_prompts}")
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
    from sdlearn.schedulers import ADAMS_BASHFORTH, stability_limit

    stiff = [stiffness(pipe, prompts[:args.stiffness_prompts], w) for w in STIFFNESS_W] if args.stiffness_prompts else []
    for r in stiff:
        print(f"stiffness at w = {r['guidance']:g}: median z {r['median_z']:.2f}, max {r['max_z']:.2f}, "
              f"steps past the limit of AB1-4 {list(r['steps_past_limit'].values())}", flush=True)
    result = {"benchmark": "multistep", "model": args.model, "n_prompts": args.n,
              "intervals": "95% Wilson", "settings": results,
              "stability_limits": {str(k): round(stability_limit(k), 4) for k in ADAMS_BASHFORTH},
              "stiffness": stiff, **run_info(t0, args.threads)}
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
