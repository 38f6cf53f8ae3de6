"""The committed training stages of sd-mini v2 load with plain diffusers and keep what their
README says they do (data/stages/sd-mini-v2/README.md)."""
import sys
from pathlib import Path

import pytest
import torch
from diffusers import StableDiffusionPipeline

STAGE_128 = Path(__file__).resolve().parents[1] / "data" / "stages" / "sd-mini-v2" / "model-128"


@pytest.fixture(scope="module")
def stage_128():
    pipe = StableDiffusionPipeline.from_pretrained(STAGE_128)  # loaded once for the module
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def noise_mean(load_benchmark):
    yield load_benchmark("noise_mean")
    sys.modules.pop("noise_mean_benchmark", None)


def test_stage_128_layout(stage_128):
    pipe = stage_128
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128
    assert pipe.unet.config.down_block_types[0] == "DownBlock2D"  # the 16x16 level: no attention
    assert pipe.unet.dtype == pipe.vae.dtype == torch.float32  # stored in fp16, loaded as fp32
    size = sum(f.stat().st_size for f in STAGE_128.rglob("*") if f.is_file())
    assert size <= 24e6, size


def test_stage_128_caption_picks_the_background(stage_128, noise_mean):
    """Offset noise (leg 2) closed the leak: shifting the starting noise's mean no longer changes
    the background the caption asks for (run 1, without it, followed the noise: 2 of 8)."""
    res = noise_mean.probe(stage_128, seeds=1)
    assert res["background_as_asked"] >= 7 / 8, res["readings"]
