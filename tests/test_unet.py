import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler

from sdlearn.architectures import SD15_SCHEDULER, unet_from
from sdlearn.unet import (SD15_UNET_CONFIG, SD15_UNET_PARAMS, count_params, noise_errors, pred_x0, predict_noise,
                          sd15_unet_skeleton)

BETAS = {k: SD15_SCHEDULER[k] for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")}


def _tensors(shape=(2, 4, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_sd15_unet_skeleton_has_859_million_params():
    unet = sd15_unet_skeleton()
    assert next(unet.parameters()).device.type == "meta"  # no memory was allocated
    assert count_params(unet) == SD15_UNET_PARAMS == 859_520_964
    assert unet.config.block_out_channels == (320, 640, 1280, 1280)
    assert unet.config.cross_attention_dim == 768 and unet.config.sample_size == 64
    assert SD15_UNET_CONFIG["down_block_types"][-1] == "DownBlock2D"  # no attention at 8x8
    assert count_params(sd15_unet_skeleton(cross_attention_dim=1024)) > SD15_UNET_PARAMS  # SD 2's width


@pytest.mark.parametrize("t", [1, 250, 999])
def test_pred_x0_matches_ddim_step(t):
    sched = DDIMScheduler(**BETAS, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")
    sched.set_timesteps(1000)
    x_t, eps = _tensors()
    ref = sched.step(eps, t, x_t).pred_original_sample
    assert torch.allclose(pred_x0(sched, x_t, eps, t), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("t", [0, 500, 999])
def test_pred_x0_matches_ddpm_step(t):
    sched = DDPMScheduler(**BETAS, clip_sample=False, prediction_type="epsilon")
    x_t, eps = _tensors()
    ref = sched.step(eps, t, x_t, generator=torch.Generator().manual_seed(0)).pred_original_sample
    assert torch.allclose(pred_x0(sched, x_t, eps, t), ref, atol=1e-5, rtol=1e-4)


def test_pred_x0_inverts_add_noise_per_sample_timesteps(tiny_pipe):
    sched = tiny_pipe.scheduler  # PNDM: the formula only needs alphas_cumprod
    x0, eps = _tensors((3, 4, 8, 8))
    t = torch.tensor([10, 400, 900])
    x_t = sched.add_noise(x0, eps, t)
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    assert torch.allclose(x_t, abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-6)  # the forward formula
    assert torch.allclose(pred_x0(sched, x_t, eps, t), x0, atol=1e-4)  # solving it back with the true noise
    for i in range(3):  # a (B,) tensor of timesteps equals one call per sample
        assert torch.allclose(pred_x0(sched, x_t, eps, t)[i], pred_x0(sched, x_t[i:i + 1], eps[i:i + 1], int(t[i]))[0])


def test_predict_noise_shape_and_prompt_dependence(tiny_pipe):
    unet = tiny_pipe.unet
    x_t, _ = _tensors((1, 4, 8, 8))
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 77, 768, generator=g), torch.randn(1, 77, 768, generator=g)
    eps_a = predict_noise(unet, x_t, 500, a)
    assert eps_a.shape == x_t.shape
    with torch.no_grad():
        assert torch.equal(eps_a, unet(x_t, 500, encoder_hidden_states=a).sample)
    assert not torch.allclose(eps_a, predict_noise(unet, x_t, 500, b))  # the prompt matters
    two = predict_noise(unet, torch.cat([x_t, x_t]), 500, a)  # a (1, 77, h) prompt serves a batch
    assert torch.allclose(two[0], eps_a[0], atol=1e-5) and torch.allclose(two[1], eps_a[0], atol=1e-5)


def test_noise_errors_match_a_hand_loop(tiny_pipe):
    unet, sched = tiny_pipe.unet, tiny_pipe.scheduler
    x0, _ = _tensors((1, 4, 8, 8), seed=3)
    emb = torch.zeros(1, 77, 768)
    ts = [50, 500, 950]
    errs = noise_errors(unet, sched, x0, emb, ts, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
    for t, e in zip(ts, errs):
        x_t = sched.add_noise(x0, noise, torch.tensor([t]))
        with torch.no_grad():
            ref = torch.nn.functional.mse_loss(unet(x_t, t, encoder_hidden_states=emb).sample, noise).item()
        assert e == pytest.approx(ref, rel=1e-5)


def test_unet_from_plain_levels():
    """SDXL's layout: the highest-resolution level(s) without attention, the rest cross-attend."""
    u = unet_from((16, 32), cross_dim=8, sample_size=8, layers=1, heads=2, plain_levels=1)
    assert u.config.down_block_types == ("DownBlock2D", "CrossAttnDownBlock2D")
    assert u.config.up_block_types == ("CrossAttnUpBlock2D", "UpBlock2D")
    assert unet_from((16, 32), cross_dim=8, sample_size=8, layers=1, heads=2).config.down_block_types == (
        "CrossAttnDownBlock2D",) * 2
    with pytest.raises(ValueError, match="plain_levels"):
        unet_from((16, 32), cross_dim=8, sample_size=8, layers=1, heads=2, plain_levels=2)
