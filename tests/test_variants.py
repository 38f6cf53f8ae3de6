"""Fine-tuning sd-mini's UNet for depth (5 channels) and inpainting (9): conditions match the
pipelines' own preprocessing, the widened UNet starts equal to the original, and every stage runs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionDepth2ImgPipeline, StableDiffusionInpaintPipeline, UNet2DConditionModel

from sdlearn.depth2img import depth_condition
from sdlearn.inpainting import inpaint_condition
from sdlearn.mini import recipe, variants, world
from sdlearn.architectures import tiny_components


def test_depth_condition_is_the_pipelines(tiny_pipe):
    depth = torch.rand(2, 64, 64) * 3 + 1
    comps = {k: tiny_pipe.components[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler", "unet")}
    pipe = StableDiffusionDepth2ImgPipeline(**comps, depth_estimator=None, feature_extractor=None)
    ref = pipe.prepare_depth_map(torch.zeros(1, 3, 64, 64), depth, 2, False, torch.float32, torch.device("cpu"))
    ours = depth_condition(depth, (8, 8))
    assert torch.equal(ours, ref) and ours.amin() == -1 and ours.amax() == 1
    with pytest.raises(ValueError, match="B, H, W"):
        depth_condition(depth[0], (8, 8))


def test_inpaint_condition_is_the_pipelines():
    """Against diffusers' own ``prepare_mask_latents``, with the pipeline's masked picture and the
    same generator: the mask channel and the masked-picture latents agree exactly."""
    pipe = StableDiffusionInpaintPipeline(**tiny_components())
    image = torch.rand(2, 3, 64, 64) * 2 - 1
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    ref_mask, ref_lat = pipe.prepare_mask_latents(mask, image * (mask < 0.5), 2, 64, 64, torch.float32,
                                                  torch.device("cpu"), torch.Generator().manual_seed(3), False)
    gen = torch.Generator().manual_seed(3)
    ours = inpaint_condition(image, mask, lambda x: pipe._encode_vae_image(x, generator=gen),
                             pipe.vae_scale_factor)
    assert ours.shape == (2, 5, 8, 8)
    assert torch.equal(ours[:, :1], ref_mask) and torch.equal(ours[:, 1:], ref_lat)


def test_widen_conv_in_keeps_predictions():
    unet = tiny_components()["unet"]
    wide = variants.widen_conv_in(unet, 5)
    assert wide.config.in_channels == 9 and wide.conv_in.weight.shape[1] == 9
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 77, 768)
    with torch.no_grad():
        a = unet(x, 10, encoder_hidden_states=c).sample
        b = wide(torch.cat([x, torch.randn(1, 5, 8, 8)], 1), 10, encoder_hidden_states=c).sample
    assert torch.equal(a, b)  # zero-initialised extra channels: the same function on step 0


def test_training_masks_mix():
    rng = np.random.default_rng(0)
    s = world.sample(1, 0)
    kinds = [variants.training_mask(s, i, rng) for i in range(4)]
    assert np.array_equal(kinds[0], (s.mask > 0).astype(np.float32)) and kinds[3].all()
    assert 0 < kinds[2].mean() < 1 and set(np.unique(kinds[2])) == {0.0, 1.0}


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        variants.prepare(variant="colour")


@pytest.mark.parametrize("variant", ["depth", "inpaint"])
def test_stages_at_toy_scale(tmp_path, variant):
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0)
    recipe.encode_world(tmp_path, n=6, batch=3, progress=False)
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False)
    variants.prepare(tmp_path, variant, batch=4, progress=False)
    cond = torch.load(tmp_path / f"cond_{variant}.pt", weights_only=False)["cond"]
    assert cond.shape == (6, variants.EXTRA_CHANNELS[variant], 8, 8) and cond.dtype == torch.float16
    variants.train(tmp_path, variant, steps=2, batch=2, ckpt_every=1, progress=False)
    st = torch.load(tmp_path / f"unet_{variant}.pt", weights_only=False)
    assert st["step"] == 2 and {"unet", "opt", "ema", "step", "log"} <= set(st)
    assert st["unet"]["conv_in.weight"].shape[1] == 4 + variants.EXTRA_CHANNELS[variant]
    variants.train(tmp_path, variant, steps=3, batch=2, progress=False)  # resumes at 2
    assert [r["step"] for r in torch.load(tmp_path / f"unet_{variant}.pt", weights_only=False)["log"]] == [0, 1, 2]
    out = variants.export(tmp_path, variant, out=tmp_path / "out")
    unet = UNet2DConditionModel.from_pretrained(out / "unet", dtype=torch.float32)
    assert unet.config.in_channels == 4 + variants.EXTRA_CHANNELS[variant] and unet.dtype == torch.float32
    ema = torch.load(tmp_path / f"unet_{variant}.pt", weights_only=False)["ema"]
    assert all(torch.equal(p, e.half().float()) for p, e in zip(unet.parameters(), ema))  # the EMA, in fp16



def test_fine_tune_from_a_pipeline_folder(tmp_path, monkeypatch):
    """``--init``: the variant starts from a shipped folder's weights (not ``work/unet.pt``) and
    sees the latents at that folder's VAE scale."""
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0)
    recipe.encode_world(tmp_path, n=6, batch=3, progress=False)
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False)
    folder = recipe.export(tmp_path, out=tmp_path / "shipped")
    data_std = float(torch.load(tmp_path / "latents.pt", weights_only=False)["std"])
    assert variants._latent_std(tmp_path, None) == pytest.approx(data_std)
    cfg_path = folder / "vae" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "scaling_factor": 0.5}))  # a different scale: 1 / 0.5 = 2
    assert variants._latent_std(tmp_path, folder) == 2.0
    seen = []
    real = variants.load_latents
    monkeypatch.setattr(variants, "load_latents", lambda work, std=None: seen.append(std) or real(work, std))
    (tmp_path / "unet.pt").rename(tmp_path / "unet.pt.away")  # proves it is not read
    variants.prepare(tmp_path, "depth", batch=4, progress=False, init=folder)
    variants.train(tmp_path, "depth", steps=1, batch=2, progress=False, init=folder)
    assert seen == [2.0]
    base = UNet2DConditionModel.from_pretrained(folder / "unet").state_dict()
    st = torch.load(tmp_path / "unet_depth.pt", weights_only=False)["unet"]
    key = "mid_block.resnets.0.conv1.weight"  # one step at warm-up lr: still the folder's weights
    assert (st[key] - base[key].float()).abs().max() < 1e-3
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "README.md").write_text("card")  # a hand-written model card survives
    out = variants.export(tmp_path, "depth", out=tmp_path / "out", init=folder)
    assert UNet2DConditionModel.from_pretrained(out / "unet").config.in_channels == 5
    assert (out / "README.md").read_text() == "card"


def test_caption_noise_reaches_the_batches(tmp_path, monkeypatch):
    """``caption_noise``: the variants' fine-tune draws its batches as the base model's last leg
    did (``recipe.caption_batch`` with that q); a q outside [0, 1) is refused before loading."""
    with pytest.raises(ValueError, match="caption_noise"):
        variants.train(Path("/nonexistent"), "depth", caption_noise=1.0)
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0)
    recipe.encode_world(tmp_path, n=6, batch=3, progress=False)
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False)
    variants.prepare(tmp_path, "depth", batch=4, progress=False)
    seen = []
    real = variants.caption_batch
    monkeypatch.setattr(variants, "caption_batch", lambda *a: seen.append(a[-1]) or real(*a))
    variants.main(["train", "depth", "--work", str(tmp_path), "--steps", "2", "--caption-noise", "0.5"])
    assert seen == [0.5, 0.5]
