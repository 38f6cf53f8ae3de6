"""sd-mini's recipe at toy scale: every stage runs, checkpoints (the same keys as the shipped
run's checkpoints), resumes and exports a loadable model. The loop itself: tests/test_training.py."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import StableDiffusionPipeline

from sdlearn.mini import recipe, variants, world
from sdlearn.mini.configs import mini_components


def test_vae_batch():
    rng = np.random.default_rng(0)
    x = recipe.vae_batch(rng, 0, 4, 32, photos=[], photo_frac=0.0)
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    photo = np.full((40, 50, 3), 255, np.uint8)  # a white "photo": its crops are all 1.0
    y = recipe.vae_batch(np.random.default_rng(0), 0, 6, 32, photos=[photo], photo_frac=1.0)
    assert y.shape == (6, 3, 32, 32) and (y == 1).all()


def test_caption_batch_drops_captions():
    latents, ids, uncond = torch.randn(10, 4, 8, 8), torch.arange(10)[:, None].repeat(1, 77), torch.full((1, 77), -1)
    idx, x0, got = recipe.caption_batch(latents, ids, uncond, 6, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(x0, latents[idx]) and torch.equal(got, ids[idx])
    _, _, dropped = recipe.caption_batch(latents, ids, uncond, 6, 1.0, torch.Generator().manual_seed(0))
    assert (dropped == -1).all() and (ids >= 0).all()  # the cache itself is untouched


def test_caption_batch_swaps_captions():
    """caption_noise q: that share of the kept captions becomes another picture's; "" stays "";
    q = 0 draws nothing more, so a run without it replays exactly."""
    latents, ids, uncond = torch.randn(50, 4, 8, 8), torch.arange(50)[:, None].repeat(1, 77), torch.full((1, 77), -1)
    plain = recipe.caption_batch(latents, ids, uncond, 400, 0.1, torch.Generator().manual_seed(1))
    again = recipe.caption_batch(latents, ids, uncond, 400, 0.1, torch.Generator().manual_seed(1), 0.0)
    assert all(torch.equal(a, b) for a, b in zip(plain, again))
    idx, x0, got = recipe.caption_batch(latents, ids, uncond, 400, 0.1, torch.Generator().manual_seed(1), 0.5)
    assert torch.equal(idx, plain[0]) and torch.equal(x0, latents[idx])  # the same pictures
    dropped = (got == -1).all(dim=1)
    assert torch.equal(dropped, (plain[2] == -1).all(dim=1))  # the same captions dropped
    own = (got[:, 0] == idx) & ~dropped
    kept = (~dropped).sum().item()
    # swapped to a random picture's caption: about half, less the few that draw their own again
    assert 0.35 * kept < kept - own.sum().item() < 0.6 * kept
    assert ((got[:, :1] == got).all(dim=1)).all() and ((got[:, 0] >= 0) | dropped).all()  # whole rows of the cache
    with pytest.raises(ValueError, match="caption_noise"):
        recipe.train_unet(Path("/nonexistent"), caption_noise=1.0)


def test_all_stages_at_toy_scale(tmp_path, monkeypatch):
    recipe.train_vae(tmp_path, steps=2, batch=2, photo_frac=0.0, ckpt_every=1)
    assert torch.load(tmp_path / "vae.pt", weights_only=False)["step"] == 2
    recipe.train_vae(tmp_path, steps=3, batch=2, photo_frac=0.0, ckpt_every=1)  # resumes at 2
    st = torch.load(tmp_path / "vae.pt", weights_only=False)
    assert st["step"] == 3 and [r["step"] for r in st["log"]] == [0, 1, 2]
    assert {"model", "opt", "step", "log"} <= set(st) and set(st["log"][0]) == {"step", "loss", "psnr"}
    recipe.encode_world(tmp_path, n=8, batch=4)
    data = torch.load(tmp_path / "latents.pt", weights_only=False)
    assert data["latents"].shape == (8, 4, 8, 8) and data["input_ids"].shape == (8, 77)
    assert data["uncond_ids"][0, :2].tolist() == [49406, 49407]  # "" = BOS, EOS, padding
    recipe.train_unet(tmp_path, steps=2, batch=4, ckpt_every=1)
    assert (tmp_path / "unet_loss.png").exists() and (tmp_path / "vae_loss.png").exists()
    st = torch.load(tmp_path / "unet.pt", weights_only=False)
    assert {"unet", "text_encoder", "opt", "ema", "step", "log"} <= set(st)
    scaled, input_ids, uncond = recipe.load_latents(tmp_path)
    assert torch.allclose(scaled, data["latents"] / data["std"]) and input_ids.dtype == uncond.dtype == torch.int64
    unet, te = recipe.load_unet_and_text(tmp_path)  # the EMA weights, as exported
    params = list(unet.parameters()) + list(te.parameters())
    assert all(torch.equal(p, e) for p, e in zip(params, st["ema"]))
    raw, _ = recipe.load_unet_and_text(tmp_path, use_ema=False)
    assert all(torch.equal(v, st["unet"][k]) for k, v in raw.state_dict().items())
    out = recipe.export(tmp_path, out=tmp_path / "model")
    cfg = json.loads((out / "vae" / "config.json").read_text())
    assert abs(cfg["scaling_factor"] - 1 / data["std"]) < 1e-4
    pipe = StableDiffusionPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    from safetensors import safe_open

    with safe_open(out / "unet" / "diffusion_pytorch_model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.float16  # stored in half the bytes
    assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.float32  # loaded as fp32
    img = pipe("a red circle", num_inference_steps=2, height=64, width=64).images[0]
    assert img.size == (64, 64)
    # A later session goes on from the exported weights (--init): step 0 starts from them exactly.
    seen = {}

    def first_step(step_fn, params, steps, **kw):
        seen["params"] = [p.detach().clone() for p in params]
        return {"log": [{"step": 0, "loss": 1.0}]}

    again = tmp_path / "again"
    again.mkdir()
    (again / "latents.pt").write_bytes((tmp_path / "latents.pt").read_bytes())
    monkeypatch.setattr(recipe, "fit", first_step)
    recipe.train_unet(again, steps=1, batch=2, init=out)
    exported = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    assert len(seen["params"]) == len(exported)
    assert all(torch.equal(a, b) for a, b in zip(seen["params"], exported))


def test_native_size_128(tmp_path):
    """At 128 px the latents are 16x16 and the UNet has a third level whose 16x16 top is ResNets
    only (SDXL's layout); every stage reads the size from the cached latents, the export included."""
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0, progress=False)
    recipe.encode_world(tmp_path, n=4, batch=4, progress=False, size=128)
    assert recipe.native_size(tmp_path) == 128
    assert recipe.world_pictures(tmp_path, 4, 128).shape == (4, 128, 128, 3)
    assert np.array_equal(recipe.world_pictures(tmp_path, 4, 128)[3], world.sample(recipe.TRAIN_SEED, 3, 128).image)
    assert torch.load(tmp_path / "latents.pt", weights_only=False)["latents"].shape == (4, 4, 16, 16)
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False)
    unet, _ = recipe.load_unet_and_text(tmp_path)
    assert unet.config.sample_size == 16 and unet.config.block_out_channels == (32, 64, 128)
    assert unet.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D")
    pipe = StableDiffusionPipeline.from_pretrained(recipe.export(tmp_path, out=tmp_path / "model"))
    assert pipe.unet.config.sample_size * pipe.vae_scale_factor == 128  # diffusers' default height
    variants.prepare(tmp_path, "depth", batch=4, progress=False)
    assert torch.load(tmp_path / "cond_depth.pt", weights_only=False)["cond"].shape == (4, 1, 16, 16)


def test_frozen_pretrained_text_encoder(tmp_path):
    """SD 1.5's recipe: the UNet trains under a pretrained text encoder that stays frozen."""
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0, progress=False)
    recipe.encode_world(tmp_path, n=4, batch=4, progress=False)
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False)
    first = recipe.export(tmp_path, out=tmp_path / "first")
    again = tmp_path / "again"
    again.mkdir()
    (again / "latents.pt").write_bytes((tmp_path / "latents.pt").read_bytes())
    recipe.train_unet(again, steps=2, batch=2, progress=False, text_init=first, train_text=False)
    pretrained = StableDiffusionPipeline.from_pretrained(first).text_encoder.state_dict()
    unet, te = recipe.load_unet_and_text(again)  # the EMA of the UNet; the text encoder as it was
    assert all(torch.equal(v, pretrained[k]) for k, v in te.state_dict().items())
    raw, _ = recipe.load_unet_and_text(again, use_ema=False)
    assert not all(torch.equal(a, b) for a, b in zip(unet.parameters(), raw.parameters()))


def test_mini_components_sizes():
    assert mini_components(size=64)["unet"].config.down_block_types == ("CrossAttnDownBlock2D",) * 2
    with pytest.raises(ValueError, match="size must be one of"):
        mini_components(size=96)


@pytest.mark.parametrize("cli, stages", [(recipe, "{vae,vae-save,vae-load,vae-ft,latents,clip,unet,export}"),
                                         (variants, "{prepare,train,export}")])
def test_cli_help(capsys, cli, stages):
    """What the Makefile's sd-mini and sd-mini-variants targets call."""
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0 and stages in capsys.readouterr().out


def test_vae_stage_saves_and_loads_without_optimizer_state(tmp_path):
    """Stage 1's committed output (weights only) starts a new work folder where it left off."""
    work, stage, fresh = tmp_path / "a", tmp_path / "stage", tmp_path / "b"
    recipe.train_vae(work, steps=2, batch=2, photo_frac=0.0, progress=False)
    recipe.main(["vae-save", "--work", str(work), "--out", str(stage)])
    assert (stage / "diffusion_pytorch_model.safetensors").exists() and (stage / "vae_loss.png").exists()
    recipe.main(["vae-load", "--init", str(stage), "--work", str(fresh)])
    assert "opt" not in torch.load(fresh / "vae.pt", weights_only=False)
    a, b = recipe.load_vae(work).state_dict(), recipe.load_vae(fresh).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="weights only"):  # said before any compute
        recipe.train_vae(fresh, steps=3, batch=2, photo_frac=0.0, progress=False)


def test_unet_cli_passes_lr_and_snr_gamma(monkeypatch, tmp_path):
    """``unet --lr 3e-4 --snr-gamma 5`` reaches train_unet; without them its defaults hold."""
    seen = []
    monkeypatch.setattr(recipe, "train_unet", lambda work, **kw: seen.append(kw))
    recipe.main(["unet", "--work", str(tmp_path), "--steps", "7", "--lr", "3e-4", "--snr-gamma", "5"])
    recipe.main(["unet", "--work", str(tmp_path)])
    assert seen[0]["lr"] == 3e-4 and seen[0]["snr_gamma"] == 5 and seen[0]["steps"] == 7
    assert "lr" not in seen[1] and seen[1]["snr_gamma"] is None and "steps" not in seen[1]
    recipe.main(["unet", "--work", str(tmp_path), "--seed", "3"])
    assert seen[0]["seed"] == 0 and seen[2]["seed"] == 3  # 0 by default: the shipped legs replay exactly



def test_vae_cli_passes_the_blurred_latent_options(monkeypatch, tmp_path):
    """`make sd-mini-vae`'s blurred-latent legs (vae-blur/, vae-blur-ft/) reach train_vae with the
    arguments those committed stages were trained with; without the options the defaults hold."""
    seen = []
    monkeypatch.setattr(recipe, "train_vae", lambda work, **kw: seen.append(kw))
    blur = "--steps 1000 --batch 8 --crop 64 --pool 40000 --size 128 --latent-blur 0.5".split()
    recipe.main(["vae", "--init", "stage/vae", *blur, "--lr", "3e-4", "--work", str(tmp_path)])
    recipe.main(["vae-ft", *blur, "--lr", "1e-4", "--photo-frac", "0.3", "--work", str(tmp_path)])
    recipe.main(["vae", "--work", str(tmp_path)])
    recipe.main(["vae-ft", "--work", str(tmp_path)])
    same = dict(steps=1000, batch=8, crop=64, pool=40000, size=128, latent_blur=0.5)
    assert seen[0] == {**same, "lr": 3e-4, "init": Path("stage/vae"), "photo_frac": 0.1, "stop_at": None}
    assert seen[1] == {**same, "lr": 1e-4, "decoder_only": True, "photo_frac": 0.3}
    assert (seen[2]["batch"], seen[2]["crop"], seen[2]["latent_blur"], seen[2]["size"]) == (32, 32, 0.0, 64)
    assert "lr" not in seen[2] and "steps" not in seen[2]
    assert (seen[3]["batch"], seen[3]["crop"], seen[3]["lr"], seen[3]["steps"]) == (16, 64, 3e-4, 2000)


def test_cli_passes_the_text_encoder_options(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(recipe, "train_unet", lambda work, **kw: seen.update(kw))
    recipe.main(["unet", "--work", str(tmp_path), "--text-init", "some/model", "--freeze-text", "--steps", "3"])
    assert seen["text_init"] == Path("some/model") and seen["train_text"] is False and seen["steps"] == 3
    recipe.main(["unet", "--work", str(tmp_path), "--noise-offset", "0.1"])
    assert seen["noise_offset"] == 0.1
    recipe.main(["unet", "--work", str(tmp_path), "--object-weight", "3"])
    assert seen["object_weight"] == 3
    recipe.main(["unet", "--work", str(tmp_path)])
    assert seen["text_init"] is None and seen["train_text"] is True and seen["object_weight"] == 0


def test_object_masks_cover_the_rendered_objects(tmp_path):
    """Drawn from the scenes alone, the latent-resolution masks hold every latent place that the
    rendered picture's object mask touches, and a ring more; and they are cached."""
    m = recipe._object_masks(tmp_path, 24, 16)
    assert m.shape == (24, 1, 16, 16) and m.dtype == torch.uint8
    for i in range(24):
        s = world.sample(recipe.TRAIN_SEED, i, size=128)
        touched = F.max_pool2d(torch.from_numpy(s.mask).float()[None, None], 8)[0] > 0
        assert m[i][touched].all()
        assert m[i].sum() > touched.sum()  # the ring around the object
    assert torch.equal(recipe._object_masks(tmp_path, 24, 16), m)


def _assert_blur_mix(got: torch.Tensor, z: torch.Tensor, most: float = 0.5) -> None:
    """``got`` is (1 - a) z + a blur3x3(z) with a in [0, most] a sample, and not z itself."""
    smooth = F.avg_pool2d(z, 3, stride=1, padding=1, count_include_pad=False)
    d = (smooth - z).flatten(1)
    a = ((got - z).flatten(1) * d).sum(1) / d.pow(2).sum(1)  # the mix share, sample by sample
    assert ((a >= 0) & (a <= most)).all() and not torch.allclose(got, z)
    assert torch.allclose(got, z + a[:, None, None, None] * (smooth - z), atol=1e-5)


def test_vae_latent_blur_feeds_the_decoder_a_partly_smoothed_latent(tmp_path, monkeypatch):
    """``latent_blur=0.5``: the decoder reads (1 - a) z + a blur3x3(z), a in [0, 0.5] a sample,
    where z is the very latent the plain run decodes (same seed, same step)."""
    from diffusers import AutoencoderKL

    seen = []
    decode = AutoencoderKL.decode
    monkeypatch.setattr(AutoencoderKL, "decode", lambda self, z, *a, **k: seen.append(z.detach().clone()) or decode(self, z, *a, **k))
    recipe.train_vae(tmp_path / "plain", steps=1, batch=3, photo_frac=0.0, progress=False)
    recipe.train_vae(tmp_path / "blur", steps=1, batch=3, photo_frac=0.0, progress=False, latent_blur=0.5)
    z, got = seen
    _assert_blur_mix(got, z)


def test_vae_decoder_only_latent_blur_smooths_the_frozen_encoders_mean(tmp_path, monkeypatch):
    """``decoder_only=True, latent_blur=0.5``: the decoder reads the frozen encoder's latent mean
    with the same per-sample blur mix, and the encoder's weights do not move."""
    from diffusers import AutoencoderKL

    recipe.train_vae(tmp_path, steps=1, batch=3, photo_frac=0.0, progress=False)
    before = torch.load(tmp_path / "vae.pt", weights_only=False)["model"]
    seen, means = [], []
    decode, encode = AutoencoderKL.decode, AutoencoderKL.encode
    monkeypatch.setattr(AutoencoderKL, "decode", lambda self, z, *a, **k: seen.append(z.detach().clone()) or decode(self, z, *a, **k))

    def spy(self, x, *a, **k):
        out = encode(self, x, *a, **k)
        means.append(out.latent_dist.mean.detach().clone())
        return out

    monkeypatch.setattr(AutoencoderKL, "encode", spy)
    recipe.train_vae(tmp_path, steps=1, batch=3, photo_frac=0.0, progress=False, decoder_only=True, latent_blur=0.5)
    (got,), (z,) = seen, means
    _assert_blur_mix(got, z)
    after = torch.load(tmp_path / "vae_ft.pt", weights_only=False)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert not all(torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
