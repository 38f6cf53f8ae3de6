"""sd-mini, the bundled model: loads from package data, is deterministic and obeys prompts.

Picture content is checked with the deterministic scorer (sdlearn.mini.scoring), never by eye.
"""
import numpy as np
import pytest
from diffusers import StableDiffusionPipeline

from sdlearn.mini import scoring_v1 as scoring
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
    assert size <= 30e6, size
    pipe = StableDiffusionPipeline.from_pretrained(folder)  # plain diffusers loads it too
    assert pipe.vae_scale_factor == 8 and pipe.vae.config.latent_channels == 4
    assert len(pipe.tokenizer) == 49408 and pipe.tokenizer.model_max_length == 77
    s = mini.scheduler.config
    assert (s.beta_start, s.beta_end, s.beta_schedule, s.num_train_timesteps, s.prediction_type) == (
        0.00085, 0.012, "scaled_linear", 1000, "epsilon")
    assert is_trained("mini")


def test_same_seed_same_image(mini):
    a = _generate(mini, ["a red circle"], [7])[0]
    b = _generate(mini, ["a red circle"], [7])[0]
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_unknown_words_are_ignored(mini):
    img = _generate(mini, ["a red flooble circle zxqvw on a blue background"], [0])[0]
    assert img.size[0] == mini.unet.config.sample_size * 8


def test_prompts_are_obeyed(mini):
    seeds = [0, 1]
    images = _generate(mini, [p for p in PROMPTS for _ in seeds], [s for _ in PROMPTS for s in seeds])
    results = [scoring.score(img, p) for img, p in zip(images, [p for p in PROMPTS for _ in seeds])]
    ok = [r["colour_ok"] and r["shape_ok"] for r in results]
    assert sum(ok) >= 14, [(p, r) for p, r, good in zip([p for p in PROMPTS for _ in seeds], results, ok) if not good]


def test_guidance_beats_no_guidance(mini):
    scenes = scoring.eval_prompts(24, seed=999)
    prompts, seeds = [s.caption for s in scenes], list(range(len(scenes)))

    def acc(g):
        imgs = _generate(mini, prompts, seeds, guidance=g)
        return np.mean([scoring.score(i, s)["shape_ok"] and scoring.score(i, s)["colour_ok"]
                        for i, s in zip(imgs, scenes)])

    assert acc(7.5) > acc(1.0)
