"""Fine-tuning sd-mini's UNet for depth (5 channels) and inpainting (9): conditions match the
pipelines' own preprocessing, the widened UNet starts equal to the original, and every stage runs."""
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline, StableDiffusionInpaintPipeline, UNet2DConditionModel

from sdlearn import finetune, train, world
from sdlearn.architectures import tiny_components


def test_depth_condition_is_the_pipelines(tiny_pipe):
    depth = torch.rand(2, 64, 64) * 3 + 1
    comps = {k: tiny_pipe.components[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler", "unet")}
    pipe = StableDiffusionDepth2ImgPipeline(**comps, depth_estimator=None, feature_extractor=None)
    ref = pipe.prepare_depth_map(torch.zeros(1, 3, 64, 64), depth, 2, False, torch.float32, torch.device("cpu"))
    ours = finetune.depth_condition(depth, (8, 8))
    assert torch.equal(ours, ref) and ours.amin() == -1 and ours.amax() == 1
    with pytest.raises(ValueError, match="B, H, W"):
        finetune.depth_condition(depth[0], (8, 8))


def test_inpaint_condition_is_the_pipelines():
    comps = tiny_components()
    pipe = StableDiffusionInpaintPipeline(**comps)
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    sf = pipe.vae.config.scaling_factor
    ours = finetune.inpaint_condition(image, mask, pipe.vae, sf)
    # The pipeline samples the encoder's Gaussian; with the mean both agree exactly.
    m_ref = torch.nn.functional.interpolate(mask, size=(8, 8))
    lat_ref = pipe.vae.encode(image * (mask < 0.5)).latent_dist.mean * sf
    assert ours.shape == (2, 5, 8, 8)
    assert torch.equal(ours[:, :1], m_ref) and torch.allclose(ours[:, 1:], lat_ref)


def test_widen_conv_in_keeps_predictions():
    unet = tiny_components()["unet"]
    wide = finetune.widen_conv_in(unet, 5)
    assert wide.config.in_channels == 9 and wide.conv_in.weight.shape[1] == 9
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 768)
    with torch.no_grad():
        a = unet(x, 10, encoder_hidden_states=c).sample
        b = wide(torch.cat([x, torch.randn(1, 5, 8, 8)], 1), 10, encoder_hidden_states=c).sample
    assert torch.equal(a, b)  # zero-initialised extra channels: the same function on step 0


def test_training_masks_mix():
    rng = np.random.default_rng(0)
    s = world.sample(1, 0)
    kinds = [finetune.training_mask(s, i, rng) for i in range(4)]
    assert np.array_equal(kinds[0], (s.mask > 0).astype(np.float32)) and kinds[3].all()
    assert 0 < kinds[2].mean() < 1 and set(np.unique(kinds[2])) == {0.0, 1.0}


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        finetune.prepare(variant="colour")


@pytest.mark.parametrize("variant", ["depth", "inpaint"])
def test_stages_at_toy_scale(tmp_path, variant):
    train.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0)
    train.encode_world(tmp_path, n=6, batch=3, progress=False)
    train.train_unet(tmp_path, steps=1, batch=2, progress=False)
    finetune.prepare(tmp_path, variant, batch=4, progress=False)
    cond = torch.load(tmp_path / f"cond_{variant}.pt", weights_only=False)["cond"]
    assert cond.shape == (6, finetune.EXTRA_CHANNELS[variant], 8, 8) and cond.dtype == torch.float16
    finetune.train(tmp_path, variant, steps=2, batch=2, ckpt_every=1, progress=False)
    st = torch.load(tmp_path / f"unet_{variant}.pt", weights_only=False)
    assert st["step"] == 2
    finetune.train(tmp_path, variant, steps=3, batch=2, progress=False)  # resumes at 2
    assert [r["step"] for r in torch.load(tmp_path / f"unet_{variant}.pt", weights_only=False)["log"]] == [0, 1, 2]
    out = finetune.export(tmp_path, variant, out=tmp_path / "out")
    unet = UNet2DConditionModel.from_pretrained(out / "unet", dtype=torch.float32)
    assert unet.config.in_channels == 4 + finetune.EXTRA_CHANNELS[variant] and unet.dtype == torch.float32
