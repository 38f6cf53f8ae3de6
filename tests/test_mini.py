"""sd-mini, the bundled model: loads from package data, is deterministic and obeys prompts.

Picture content is checked with the deterministic scorer (sdlearn.mini.scoring), never by eye.
"""
import json
import sys

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from sdlearn.mini import scoring
from sdlearn.device import make_generator
from sdlearn.models import is_trained, load_pipeline, mini_path

pytestmark = pytest.mark.skipif(mini_path() is None, reason="sd-mini weights not bundled")

PROMPTS = ["a red circle", "a blue square on a yellow background", "a green triangle",
           "a yellow star on a purple background", "an orange circle on the left",
           "a white square on a black background", "a purple star", "a pink triangle at the top"]


@pytest.fixture(scope="module")
def mini():
    pipe = load_pipeline("mini")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, prompts, seeds, guidance=7.5, steps=25):
    size = pipe.unet.config.sample_size * pipe.vae_scale_factor
    return pipe(prompts, height=size, width=size, num_inference_steps=steps, guidance_scale=guidance,
                generator=[make_generator(s) for s in seeds]).images


def test_layout_is_stable_diffusion(mini):
    folder = mini_path()
    for sub in ("vae", "unet", "text_encoder", "tokenizer", "scheduler"):
        assert (folder / sub).is_dir()
    assert not list(folder.rglob("*.bin")), "safetensors only"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size <= 30e6, size  # the model alone; with both variants: test_shipped_weights_fit_the_budget
    pipe = StableDiffusionPipeline.from_pretrained(folder)  # plain diffusers loads it too
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert len(pipe.tokenizer) == 49408 and pipe.tokenizer.model_max_length == 77
    s = mini.scheduler.config
    assert (s.beta_start, s.beta_end, s.beta_schedule, s.num_train_timesteps, s.prediction_type) == (
        0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    assert is_trained("mini")


def test_shipped_weights_fit_the_budget():
    # Issue 11's budget: the model and its depth and inpainting UNets, 40 MB in all.
    folders = [mini_path(), mini_path("depth"), mini_path("inpaint")]
    assert None not in folders
    total = sum(f.stat().st_size for d in folders for f in d.rglob("*") if f.is_file())
    assert total <= 40e6, total
    # The variants are fine-tuned at the model's native size, so they read the same latent grid.
    native = {json.loads((d / "unet" / "config.json").read_text())["sample_size"] for d in folders}
    assert len(native) == 1, native


def test_same_seed_same_image(mini):
    a = _generate(mini, ["a red circle"], [7])[0]
    b = _generate(mini, ["a red circle"], [7])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_unknown_words_are_ignored(mini):
    img = _generate(mini, ["a red flooble circle zxqvw on a blue background"], [0])[0]
    assert img.size[0] == mini.unet.config.sample_size * 8


def test_prompts_are_obeyed(mini):
    # Colour and background are what the 128 px model follows at w = 7.5 (about 74 % and 67 % on
    # the behaviour benchmark's 200 held-out prompts); its objects are still blobs, so shapes are
    # not asked here (the benchmark and the model card give the shape figure).
    seeds = [0, 1]
    prompts = [p for p in PROMPTS for _ in seeds]
    images = _generate(mini, prompts, [s for _ in PROMPTS for s in seeds])
    results = [scoring.score(img, p) for img, p in zip(images, prompts)]
    colour = [r["colour_ok"] for r in results]
    background = [r["background_ok"] for r in results if r["background_ok"] is not None]
    assert sum(colour) >= 11, [(p, r["reading"]) for p, r in zip(prompts, results) if not r["colour_ok"]]
    assert sum(background) >= len(background) // 2, background


def test_guidance_beats_no_guidance(mini):
    scenes = scoring.eval_prompts(24, seed=999)
    prompts, seeds = [s.caption for s in scenes], list(range(len(scenes)))

    def acc(g):
        # Share of the asked colours and backgrounds that the pictures show (None: not asked).
        imgs = _generate(mini, prompts, seeds, guidance=g)
        got = [scoring.score(i, s) for i, s in zip(imgs, scenes)]
        return np.mean([r[k] for r in got for k in ("colour_ok", "background_ok") if r[k] is not None])

    assert acc(7.5) > acc(1.0)


def test_native_size_and_layout_of_v2(mini):
    assert mini.unet.config.sample_size * mini.vae_scale_factor == 128
    assert mini.unet.config.down_block_types[0] == "DownBlock2D"  # the 16x16 level: no attention
    assert mini.unet.dtype == mini.vae.dtype == torch.float32  # stored in fp16, loaded as fp32


def test_caption_picks_the_background(mini, load_benchmark):
    """Offset noise (training leg 2) closed the noise-mean leak: shifting the starting noise's
    mean no longer changes the background the caption asks for (without it: 2 of 8; see
    data/stages/sd-mini-v2/README.md and benchmarks/noise_mean.py)."""
    noise_mean = load_benchmark("noise_mean")
    try:
        res = noise_mean.probe(mini, seeds=1)
    finally:
        sys.modules.pop("noise_mean_benchmark", None)
    assert res["background_as_asked"] >= 7 / 8, res["readings"]
