"""Prompt adherence of a text-to-image model on held-out world prompts, across guidance and steps.

Generates one picture per held-out prompt (``sdlearn.mini.scoring.eval_prompts``, world seed 999) for
every setting and reads it back with the deterministic checker in ``sdlearn.mini.scoring``: how often
the asked colour, shape and background appear. Prompt ``i`` always gets seed ``--seed + i``, so
every setting starts from the same noise and the settings are compared picture for picture.

Usage (from the repository root):

    python benchmarks/adherence.py --model mini --n 200 --guidance 1 2 4 7.5 10 15 --steps 25 \\
        --step-sweep 5 10 25 50 --out benchmarks/results/adherence.json
    python benchmarks/adherence.py --checker            # the checker's own accuracy, no model
    python benchmarks/adherence.py --model stub --n 50  # exercise the harness without a model

Introduced in notebooks/04_diy_sampling_loop.ipynb.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np
from PIL import Image

from sdlearn.mini import scoring_v1 as scoring, world_v1 as world  # noqa: E402  (installed with `make setup` / `pip install -e .`)

from common import save_json  # benchmarks/common.py (the script's own folder is on sys.path)


class StubPipeline:
    """A stand-in with the pipeline's call signature: renders the parsed prompt, imperfectly.

    Low guidance swaps the shape more often and few steps leave more noise, so the harness's
    tables show a trend; it exists only to check the harness end to end without a trained model.
    """

    vae_scale_factor = 8
    unet = SimpleNamespace(config=SimpleNamespace(sample_size=8))

    def __call__(self, prompt: str | list[str], num_inference_steps: int, guidance_scale: float,
                 generator: Any, height: int, width: int) -> SimpleNamespace:
        prompts = [prompt] if isinstance(prompt, str) else prompt
        gens = generator if isinstance(generator, list) else [generator] * len(prompts)
        return SimpleNamespace(images=[self._one(p, g.initial_seed(), num_inference_steps,
                                                 guidance_scale, height)
                                       for p, g in zip(prompts, gens)])

    @staticmethod
    def _one(prompt: str, seed: int, steps: int, g: float, size: int) -> Image.Image:
        rng = np.random.default_rng(seed)
        want = scoring.parse_prompt(prompt)
        two = len(want["objects"]) > 1
        objs, used = [], {want["background"]}
        for k, o in enumerate(want["objects"][:2]):
            shape = o["shape"] or world.SHAPES[rng.integers(4)]
            if rng.random() < 0.5 / max(g, 1.0):  # weak guidance: the prompt is followed less
                shape = world.SHAPES[rng.integers(4)]
            colour = o["colour"] or str(rng.choice([c for c in world.COLOURS if c not in used]))
            used.add(colour)
            pos = o["position"] or (("left", "right")[k] if two else "centre")
            objs.append(world.WorldObject(shape, colour, "small" if two else "big", pos))
        bg = want["background"] or str(rng.choice([c for c in world.COLOURS if c not in used]))
        img = world.render(world.Scene(objs, bg), size=size, rng=rng).image.astype(np.float32)
        img += rng.normal(0.0, 40.0 / steps, img.shape)  # fewer steps: a noisier picture
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def load(model: str, device: str | None, dtype: str | None) -> Any:
    """The pipeline for ``model`` (``stub`` for the stand-in), progress bars off."""
    if model == "stub":
        return StubPipeline()
    from sdlearn.models import load_pipeline  # imports torch/diffusers: only when a model runs

    pipe = load_pipeline(model, device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def batched_generate(pipe: Any, steps: int, guidance: float) -> Callable:
    """``generate(prompts, seeds) -> images`` for ``scoring.adherence``: one pipe call per batch."""
    import torch

    size = pipe.unet.config.sample_size * pipe.vae_scale_factor  # the model's native resolution

    def generate(prompts: list[str], seeds: list[int]) -> list[Image.Image]:
        # One CPU generator per prompt: the starting noise of prompt i does not depend on the
        # batch it lands in, so results are identical whatever --batch is.
        gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
        with torch.inference_mode():
            return pipe(prompts, num_inference_steps=steps, guidance_scale=guidance,
                        generator=gens, height=size, width=size).images

    return generate


def markdown(rows: list[dict], title: str) -> str:
    """A Markdown table of sweep results."""
    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    lines = [f"**{title}**", "", "| guidance | steps | colour | shape | background | position "
             "| s / image |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{r['guidance']:g}", str(r["steps"])]
        cells += [pct(r[k]) for k in ("colour", "shape", "background", "position")]
        lines.append("| " + " | ".join(cells + [f"{r['seconds_per_image']:.3f}"]) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mini", help='registry name, diffusers folder, or "stub"')
    ap.add_argument("--n", type=int, default=200, help="held-out prompts per setting")
    ap.add_argument("--guidance", type=float, nargs="*", default=[1, 2, 4, 7.5, 10, 15])
    ap.add_argument("--steps", type=int, default=25, help="steps for the guidance sweep")
    ap.add_argument("--step-sweep", type=int, nargs="*", default=[5, 10, 25, 50])
    ap.add_argument("--step-guidance", type=float, default=7.5, help="guidance for the step sweep")
    ap.add_argument("--batch", type=int, default=25, help="prompts per pipeline call")
    ap.add_argument("--seed", type=int, default=0, help="prompt i uses seed SEED + i")
    ap.add_argument("--prompt-seed", type=int, default=999, help="world seed of the prompts")
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--rows", action="store_true", help="also store every prompt's reading")
    ap.add_argument("--checker", action="store_true", help="only print the checker's accuracy")
    ap.add_argument("--checker-n", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON to write (model sweeps: benchmarks/results/adherence.json)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    checker = scoring.checker_accuracy(n=args.checker_n, seed=args.prompt_seed)
    checker["seconds"] = round(time.perf_counter() - t0, 2)
    figures = ", ".join(f"{k} {100 * checker[k]:.1f} %"
                        for k in ("colour", "shape", "background", "position", "count"))
    print(f"checker on {args.checker_n} ground-truth renders of world seed {args.prompt_seed}: "
          + figures)
    result: dict = {"model": args.model, "checker": checker}
    if not args.checker:
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        pipe = load(args.model, args.device, args.dtype)
        prompts = scoring.eval_prompts(args.n, args.prompt_seed)
        done: dict[tuple[float, int], dict] = {}  # (guidance, steps) -> summary; no setting twice

        def run(g: float, steps: int) -> dict:
            if (g, steps) not in done:
                t = time.perf_counter()
                res = scoring.adherence(batched_generate(pipe, steps, g), prompts, seed=args.seed,
                                        batch_size=args.batch)
                summary = {"guidance": g, "steps": steps, "n": res["n"],
                           **{k: res[k] for k in ("colour", "shape", "background", "position")},
                           "seconds_per_image": (time.perf_counter() - t) / max(res["n"], 1)}
                if args.rows:
                    summary["rows"] = res["rows"]
                done[(g, steps)] = summary
                print(f"  guidance {g:g}, {steps} steps: colour {res['colour']:.3f}, "
                      f"shape {res['shape']:.3f}", flush=True)
            return done[(g, steps)]

        result.update(n=args.n, seed=args.seed, prompt_seed=args.prompt_seed, batch=args.batch,
                      size=pipe.unet.config.sample_size * pipe.vae_scale_factor,
                      guidance_sweep=[run(g, args.steps) for g in args.guidance],
                      step_sweep=[run(args.step_guidance, s) for s in args.step_sweep])
        print("\n" + markdown(result["guidance_sweep"], f"{args.model}: guidance sweep at "
                              f"{args.steps} steps, {args.n} held-out prompts"))
        print("\n" + markdown(result["step_sweep"],
                              f"{args.model}: step sweep at guidance {args.step_guidance:g}"))
    if args.out is not None:
        save_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
