import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from diffusers import (StableDiffusionDepth2ImgPipeline, StableDiffusionImg2ImgPipeline,
                       StableDiffusionInpaintPipeline, StableDiffusionPipeline)

from sdlearn.device import make_generator
from sdlearn.models import REGISTRY, ModelUnavailableError, default_model, load_pipeline, resolve


def test_registry_names_and_hub_ids():
    assert {"mini", "tiny", "sd15", "sd15-inpaint", "sd2-depth"} <= set(REGISTRY)
    assert REGISTRY["sd15"].source == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert REGISTRY["sd15-inpaint"].source == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert REGISTRY["sd2-depth"].source == "sd2-community/stable-diffusion-2-depth"


def test_default_model_from_env(monkeypatch):
    monkeypatch.delenv("SDLEARN_MODEL", raising=False)
    assert default_model() == "mini"
    monkeypatch.setenv("SDLEARN_MODEL", "tiny")
    assert default_model() == "tiny"


def test_tiny_has_sd15_interface(tiny_pipe):
    tok = tiny_pipe.tokenizer
    assert len(tok) == 49408 and tok.model_max_length == 77
    ids = tok("a red circle", padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert ids[0, :4].tolist() == [49406, 320, 736, 7117]  # BOS, a, red, circle (real CLIP ids)
    emb = tiny_pipe.text_encoder(ids)[0]
    assert emb.shape == (1, 77, 768)
    assert tiny_pipe.vae_scale_factor == 8 and tiny_pipe.vae.config.latent_channels == 4
    z = tiny_pipe.vae.encode(torch.zeros(1, 3, 512, 512)).latent_dist.mean
    assert z.shape == (1, 4, 64, 64)
    assert tiny_pipe.unet.config.cross_attention_dim == 768


@pytest.mark.parametrize("task,cls", [("txt2img", StableDiffusionPipeline), ("img2img", StableDiffusionImg2ImgPipeline),
                                      ("inpaint", StableDiffusionInpaintPipeline),
                                      ("depth", StableDiffusionDepth2ImgPipeline)])
def test_tasks_share_components(tiny_pipe, task, cls):
    pipe = load_pipeline("tiny", task=task)
    assert type(pipe) is cls
    assert pipe.vae is tiny_pipe.vae and pipe.text_encoder is tiny_pipe.text_encoder
    if task == "depth":
        assert pipe.unet.config.in_channels == 5
    else:
        assert pipe.unet is tiny_pipe.unet  # no reload


def test_tiny_generates_deterministically(tiny_pipe):
    kw = dict(height=64, width=64, num_inference_steps=2, guidance_scale=7.5)
    a = tiny_pipe("a red circle", generator=make_generator(0), **kw).images[0]
    b = tiny_pipe("a red circle", generator=make_generator(0), **kw).images[0]
    assert a.size == (64, 64) and np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_names_and_tasks(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        load_pipeline("tiny", task="video")
    with pytest.raises(ModelUnavailableError, match="Unknown model"):
        resolve("no-such-model")
    with pytest.raises(ModelUnavailableError, match="model_index.json"):
        resolve(str(tmp_path))
    with pytest.raises(ModelUnavailableError, match="sd2-depth"):
        load_pipeline("sd15", task="depth")  # fails before any download


def test_local_folder_roundtrip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "m", safe_serialization=True)
    pipe = load_pipeline(str(tmp_path / "m"))
    assert pipe.unet.config.cross_attention_dim == 768
    assert any(p.name.endswith(".safetensors") for p in (tmp_path / "m" / "unet").iterdir())


def test_offline_hub_error_names_mini():
    code = ("from sdlearn.models import load_pipeline\n"
            "try:\n    load_pipeline('sd15')\nexcept Exception as e:\n    print(type(e).__name__); print(e)\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert "ModelUnavailableError" in out.stdout, out.stdout + out.stderr
    assert 'model="mini"' in out.stdout


def test_task_defaults_to_the_models_own_and_wide_unets_serve_one_task():
    assert REGISTRY["mini-depth"].base_task == "depth" and REGISTRY["mini-inpaint"].base_task == "inpaint"
    for name, task in (("sd2-depth", "txt2img"), ("sd15-inpaint", "img2img"), ("mini-depth", "inpaint")):
        with pytest.raises(ValueError, match="serves task="):
            load_pipeline(name, task=task)  # refused before any load or download


@pytest.mark.parametrize("variant, cls, channels", [("depth", StableDiffusionDepth2ImgPipeline, 5),
                                                      ("inpaint", StableDiffusionInpaintPipeline, 9)])
def test_mini_variants_share_mini(variant, cls, channels):
    from sdlearn.models import mini_path

    if mini_path(variant) is None:
        pytest.skip(f"sd-mini's {variant} UNet not bundled")
    mini = load_pipeline("mini")
    pipe = load_pipeline(f"mini-{variant}")  # the default task is the model's own
    assert type(pipe) is cls and pipe.unet.config.in_channels == channels
    assert pipe.vae is mini.vae and pipe.text_encoder is mini.text_encoder and pipe.unet is not mini.unet
    assert pipe.unet.dtype == torch.float32  # shipped in fp16, loaded as fp32 on the CPU


def test_with_components_swaps_one_part_and_leaves_the_pipe(tiny_pipe):
    from diffusers import EulerDiscreteScheduler

    from sdlearn.models import with_components

    own = tiny_pipe.scheduler
    euler = EulerDiscreteScheduler.from_config(own.config)
    other = with_components(tiny_pipe, scheduler=euler)
    assert other.scheduler is euler and tiny_pipe.scheduler is own and other.unet is tiny_pipe.unet
    depth = with_components(load_pipeline("tiny", task="depth"), task="txt2img")  # no safety checker to pass on
    assert type(depth) is StableDiffusionPipeline and depth.safety_checker is None
