"""Our hand-written sampling loop (``sdlearn.sampling.sample``) against ``StableDiffusionPipeline``.

Same model, scheduler, steps, guidance and seed: how much slower is the loop written out in the
open (target: time ratio <= 1.03), and does it make the same picture (max pixel difference on
``output_type="np"``, [0, 1] scale)? Runs alternate pipeline-first and loop-first so that a
machine that speeds up or slows down during the benchmark affects both sides alike; the ratio is
taken of the medians.

Usage (from the repository root):

    python benchmarks/loop_vs_pipeline.py                       # mini, 25 steps, 1 thread
    python benchmarks/loop_vs_pipeline.py --model sd15 --schedulers pndm euler dpm++ --repeats 5

Writes ``benchmarks/results/loop_vs_pipeline.json`` and prints a Markdown table.

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from common import ROOT, save_json  # benchmarks/common.py (the script's own folder is on sys.path)


def _timed(fn, device: torch.device) -> tuple[float, np.ndarray]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, np.asarray(out)


def bench(pipe, scheduler: str, args: argparse.Namespace) -> dict:
    """Time both sides ``args.repeats`` times (after ``args.warmup`` untimed runs of each)."""
    from sdlearn.device import make_generator
    from sdlearn.sampling import sample
    from sdlearn.schedulers import make_scheduler

    if scheduler != "default":
        pipe.scheduler = make_scheduler(pipe, scheduler)
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # native resolution
    kw = dict(num_inference_steps=args.steps, guidance_scale=args.guidance, height=size, width=size,
              output_type="np")
    prompts = [args.prompt] * args.batch

    def theirs():
        return pipe(prompts, generator=[make_generator(args.seed + i) for i in range(args.batch)],
                    **kw).images

    def ours():
        return sample(pipe, prompts, generator=[make_generator(args.seed + i) for i in range(args.batch)],
                      **kw)

    device = pipe._execution_device
    for _ in range(args.warmup):
        _timed(theirs, device)
        _timed(ours, device)
    t_pipe, t_loop, diff = [], [], 0.0
    for r in range(args.repeats):
        order = [("pipe", theirs), ("loop", ours)]
        results = {}
        for name, fn in order if r % 2 == 0 else order[::-1]:
            results[name] = _timed(fn, device)
        t_pipe.append(results["pipe"][0])
        t_loop.append(results["loop"][0])
        diff = max(diff, float(np.abs(results["pipe"][1] - results["loop"][1]).max()))
    ratio = statistics.median(t_loop) / statistics.median(t_pipe)
    return {"scheduler": f"{type(pipe.scheduler).__name__} (default)" if scheduler == "default" else scheduler,
            "class": type(pipe.scheduler).__name__, "steps": args.steps, "guidance": args.guidance,
            "batch": args.batch, "size": size, "repeats": args.repeats,
            "pipeline_s": t_pipe, "loop_s": t_loop,
            "pipeline_median_s": statistics.median(t_pipe), "loop_median_s": statistics.median(t_loop),
            "time_ratio": ratio, "time_ratio_min": min(t_loop) / min(t_pipe),
            "max_abs_pixel_diff": diff, "within_target": ratio <= args.target}


def markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of the results."""
    lines = [f"**{title}**", "", "| scheduler | steps | pipeline s (median) | loop s (median) "
             "| ratio (median) | ratio (min) | max pixel diff |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['scheduler']} | {r['steps']} | {r['pipeline_median_s']:.3f} | "
                     f"{r['loop_median_s']:.3f} | {r['time_ratio']:.3f} | {r['time_ratio_min']:.3f} | "
                     f"{r['max_abs_pixel_diff']:.2e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help="registry name or diffusers folder")
    ap.add_argument("--schedulers", nargs="*", default=["default"],
                    help='names from sdlearn.schedulers.SCHEDULERS, or "default" (the model\'s own)')
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--batch", type=int, default=1, help="pictures per call")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="a red circle on a blue background")
    ap.add_argument("--target", type=float, default=1.03, help="the time ratio to stay under")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loop_vs_pipeline.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    from sdlearn.models import load_pipeline, resolve

    pipe = load_pipeline(args.model, device=args.device, dtype=args.dtype)
    pipe.set_progress_bar_config(disable=True)
    original = pipe.scheduler
    rows = []
    for name in args.schedulers:
        pipe.scheduler = original
        rows.append(bench(pipe, name, args))
        r = rows[-1]
        print(f"  {r['scheduler']}: ratio {r['time_ratio']:.3f}, max diff {r['max_abs_pixel_diff']:.1e}",
              flush=True)
    result = {"model": args.model, "source": resolve(args.model)[0], "device": str(pipe._execution_device), "dtype": str(pipe.unet.dtype),
              "threads": args.threads, "torch": torch.__version__, "python": platform.python_version(),
              "target_ratio": args.target, "rows": rows}
    print("\n" + markdown(rows, f"{args.model}: our loop vs StableDiffusionPipeline "
                                f"({args.repeats} runs each, {args.threads} thread(s), {result['device']})"))
    save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
