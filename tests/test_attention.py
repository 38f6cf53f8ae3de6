"""Cross-attention capture: a processor on attn2 only, the UNet's output unchanged, processors
restored (also after an error), maps averaged over heads, layers and steps; on sd-mini the word
"circle" attends where the circle is drawn."""
import numpy as np
import pytest
import torch

from sdlearn.attention import (
    CrossAttentionRecorder,
    CrossAttentionStore,
    capture_cross_attention,
    cross_attention_names,
    mass_share,
    token_maps,
)
from sdlearn.device import make_generator
from sdlearn.models import load_pipeline, mini_path
from sdlearn.sampling import sample


def _unet_inputs(unet, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = unet.config.sample_size
    x = torch.randn(batch, unet.config.in_channels, s, s, generator=g)
    c = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    return x, c


def test_only_cross_attention_gets_the_recorder(tiny_pipe):
    unet = tiny_pipe.unet
    names = cross_attention_names(unet)
    assert names and all(n.endswith("attn2.processor") for n in names)
    assert len(names) == sum(n.endswith("attn2.processor") for n in unet.attn_processors)
    with capture_cross_attention(unet):
        procs = unet.attn_processors
        assert {n for n, p in procs.items() if isinstance(p, CrossAttentionRecorder)} == set(names)


def test_output_unchanged_and_processors_restored(tiny_pipe):
    unet = tiny_pipe.unet
    before = unet.attn_processors
    x, c = _unet_inputs(unet)
    with torch.no_grad():
        ref = unet(x, 500, encoder_hidden_states=c).sample
        with capture_cross_attention(unet) as store:
            out = unet(x, 500, encoder_hidden_states=c).sample
    assert torch.allclose(out, ref, atol=1e-5, rtol=1e-4), (out - ref).abs().max()
    after = unet.attn_processors
    assert list(after) == list(before)
    assert all(type(after[k]) is type(before[k]) and after[k] is before[k] for k in before)
    assert store.steps == 1


def test_processors_restored_after_an_exception(tiny_pipe):
    unet = tiny_pipe.unet
    before = {k: type(p) for k, p in unet.attn_processors.items()}
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attention(unet):
            raise RuntimeError("boom")
    assert {k: type(p) for k, p in unet.attn_processors.items()} == before


def test_shapes_probabilities_and_steps(tiny_pipe):
    unet = tiny_pipe.unet
    latent = unet.config.sample_size  # 8
    with capture_cross_attention(unet) as store:
        sample(tiny_pipe, "a red circle", num_inference_steps=3, generator=make_generator(0))
    n_calls = len(tiny_pipe.scheduler.timesteps)  # one UNet evaluation per timestep
    assert store.steps == n_calls and set(store.calls.values()) == {n_calls}
    # with guidance every call has 2 rows, [uncond; cond]; layers at 8x8 and 4x4
    assert {tuple(s.shape) for s in store.sums.values()} == {(2, 64, 77), (2, 16, 77)}
    maps = store.average(latent)
    assert maps.shape == (2, 77, latent, latent)
    # softmax over the tokens: every pixel's attention sums to 1 (also after averaging)
    assert torch.allclose(maps.sum(1), torch.ones(2, latent, latent), atol=1e-4)
    assert store.average(latent, batch=1).shape == (1, 77, latent, latent)  # conditional row only
    assert torch.equal(store.average(latent, batch=1)[0], maps[1])
    tm = token_maps(store, tiny_pipe.tokenizer, "a red circle", latent)
    assert list(tm) == ["a", "red", "circle"]
    assert all(m.shape == (latent, latent) for m in tm.values())
    assert np.allclose(tm["red"], maps[1, 2].numpy())
    tm = token_maps(store, tiny_pipe.tokenizer, "a red circle", (latent, latent), special=True)
    assert list(tm) == ["<|startoftext|>", "a", "red", "circle", "<|endoftext|>"]


def test_token_maps_batch_duplicates_and_no_guidance(tiny_pipe):
    prompts = ["a red circle and a blue circle", "a star"]
    with capture_cross_attention(tiny_pipe.unet) as store:
        sample(tiny_pipe, prompts, num_inference_steps=2, guidance_scale=1.0,
               generator=[make_generator(0), make_generator(1)])
    assert {s.shape[0] for s in store.sums.values()} == {2}  # no guidance: one row per prompt
    first = token_maps(store, tiny_pipe.tokenizer, prompts, 8, index=0)
    assert list(first) == ["a", "red", "circle", "and", "a#2", "blue", "circle#2"]
    second = token_maps(store, tiny_pipe.tokenizer, prompts, 8, index=1)
    assert list(second) == ["a", "star"]
    assert np.allclose(second["star"], store.average(8)[1, 2].numpy())
    with pytest.raises(ValueError, match="rows"):
        store.average(8, batch=3)


def test_store_averages_layers_resized_and_steps():
    store = CrossAttentionStore()
    heads, t = 2, 3
    # a 2x2 layer whose token 0 sits in the top-left pixel; two calls average to the same map
    p = torch.zeros(1 * heads, 4, t)
    p[:, :, 2] = 1.0
    p[:, 0, 0], p[:, 0, 2] = 1.0, 0.0
    store.add("low", p, heads)
    store.add("low", p, heads)
    # a 4x4 layer with token 1 everywhere
    q = torch.zeros(heads, 16, t)
    q[:, :, 1] = 1.0
    store.add("high", q, heads)
    layers = store.layer_maps(4)
    assert layers["low"].shape == layers["high"].shape == (1, t, 4, 4)
    avg = store.average(4)
    assert torch.allclose(avg.sum(1), torch.ones(1, 4, 4))
    assert torch.allclose(avg[0, 1], torch.full((4, 4), 0.5))  # half the layers put token 1 everywhere
    assert avg[0, 0, 0, 0] > avg[0, 0, 3, 3]  # token 0 upsampled from the top-left corner
    with pytest.raises(ValueError, match="reset"):
        store.add("low", torch.zeros(heads, 9, t), heads)
    store.reset()
    with pytest.raises(ValueError, match="nothing recorded"):
        store.average(4)


@pytest.mark.skipif(mini_path() is None, reason="sd-mini weights not bundled")
def test_sd_mini_circle_attends_to_the_left():
    pipe = load_pipeline("mini")
    pipe.set_progress_bar_config(disable=True)
    prompt = "a red circle on the left and a blue square on the right"
    seeds = list(range(4))
    with capture_cross_attention(pipe.unet) as store:
        sample(pipe, [prompt] * len(seeds), num_inference_steps=25, guidance_scale=7.5,
               generator=[make_generator(s) for s in seeds])
    size = pipe.unet.config.sample_size

    def left_share(word):
        maps = [token_maps(store, pipe.tokenizer, [prompt] * len(seeds), size, index=i)[word]
                for i in range(len(seeds))]
        m = np.mean(maps, axis=0)
        return float(m[:, : size // 2].sum() / m.sum())

    circle, square = left_share("circle"), left_share("square")
    assert circle > 0.5, circle
    assert circle > square, (circle, square)


def test_overlay_is_a_heat_map_over_grey():
    from PIL import Image

    from sdlearn.attention import overlay

    m = np.zeros((8, 8), np.float32)
    m[:, :4] = 1.0  # all attention on the left half
    out = overlay(Image.new("RGB", (64, 64), (200, 200, 200)), m, alpha=0.6)
    arr = np.asarray(out).astype(int)
    assert out.size == (64, 64) and out.mode == "RGB"
    assert arr[32, 2, 0] > arr[32, 2, 2] and arr[32, 61, 2] > arr[32, 61, 0]  # red left, blue right


def test_perfect_map_is_the_masks_cover_of_each_cell_and_mass_share_reads_it():
    store = CrossAttentionStore()
    store.add("only", torch.full((2, 16, 77), 1 / 77), 2)  # one 4 x 4 layer at the latent's size
    mask = np.zeros((32, 32), bool)
    mask[:8, :12] = True  # the first cell in full, half of the second
    pm = store.perfect_map(mask, 4)
    expected = np.zeros((4, 4))
    expected[0, 0], expected[0, 1] = 1.0, 0.5
    assert np.allclose(pm, expected / expected.sum())  # no resize: the box average, summing to 1
    assert np.allclose(store.perfect_map(np.ones((32, 32)), 4), 1 / 16)  # the whole picture: flat
    assert mass_share(np.ones((4, 4)), mask) == pytest.approx(mask.mean())  # a flat map: chance
    assert mass_share(pm, mask) > 0.5
    with pytest.raises(ValueError, match="empty"):
        store.perfect_map(np.zeros((32, 32)), 4)
    with pytest.raises(ValueError, match="empty"):
        mass_share(pm, np.zeros((32, 32), bool))
    with pytest.raises(ValueError, match="nothing recorded"):
        CrossAttentionStore().perfect_map(mask, 4)
