"""The mini CLIP (sdlearn.mini.clip): its pooling and loss by hand, and its training stage at toy
scale, whose text encoder the UNet stage then reads frozen (SD 1.5's recipe)."""
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import CLIPTextModel

from sdlearn.architectures import load_tokenizer
from sdlearn.mini import clip, recipe
from sdlearn.mini.configs import mini_components


class _Fixed(torch.nn.Module):
    """A stand-in text encoder whose output at (b, k) is the vector (b, k, k²)."""

    def forward(self, ids):
        b, n = ids.shape
        k = torch.arange(n, dtype=torch.float32)
        return (torch.stack([torch.full((b, n), 0.0) + torch.arange(b)[:, None], k.expand(b, n), (k ** 2).expand(b, n)], -1),)


def test_text_features_average_the_caption_tokens_after_bos_through_eos():
    ids = torch.full((2, 77), 49407)  # padding is EOS too: only the first EOS counts
    ids[:, 0] = 49406
    ids[0, 1:4] = torch.tensor([320, 736, 2445])  # BOS a red circle EOS: tokens 1..4
    ids[1, 1:2] = 320  # BOS a EOS: tokens 1..2
    got = clip.text_features(_Fixed(), ids)
    want = torch.tensor([[0.0, (1 + 2 + 3 + 4) / 4, (1 + 4 + 9 + 16) / 4], [1.0, 1.5, 2.5]])
    assert torch.allclose(got, want)


def test_clip_loss_is_the_symmetric_cross_entropy():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 8, generator=g), torch.randn(5, 8, generator=g)
    scale = torch.tensor(math.log(10.0))
    logits = 10.0 * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T
    by_hand = []
    for m in (logits, logits.T):  # each row: -log softmax at its own index
        by_hand.append(torch.stack([-(m[k, k] - torch.logsumexp(m[k], 0)) for k in range(5)]).mean())
    assert torch.allclose(clip.clip_loss(img, txt, scale), (by_hand[0] + by_hand[1]) / 2)
    # matched pairs at CLIP's largest scale: near zero; the temperature is clamped at 100
    assert clip.clip_loss(img, img, torch.tensor(10.0)) < 1e-3
    assert torch.allclose(clip.clip_loss(img, txt, torch.tensor(10.0)), clip.clip_loss(img, txt, torch.tensor(math.log(100.0))))


def test_latent_image_encoder_shapes():
    enc = clip.LatentImageEncoder(dim=48)
    assert enc(torch.randn(3, 4, 16, 16)).shape == (3, 48)


def test_shape_word_similarity_of_a_fresh_encoder():
    te = mini_components()["text_encoder"]
    sim = clip.shape_word_similarity(te, load_tokenizer())
    assert sim.shape == (6, 6) and torch.allclose(sim.diagonal(), torch.ones(6), atol=1e-5)
    assert torch.allclose(sim, sim.T, atol=1e-6)
    ids = load_tokenizer()([f"a red {s}" for s in clip.SHAPE_PROBE]).input_ids
    assert all(len(row) == 5 for row in ids)  # BOS a red <shape> EOS: every shape is one token


def test_train_clip_at_toy_scale_then_the_unet_trains_under_it_frozen(tmp_path):
    recipe.train_vae(tmp_path, steps=1, batch=2, photo_frac=0.0, progress=False)
    recipe.encode_world(tmp_path, n=8, batch=8, progress=False)
    out = clip.train_clip(tmp_path, steps=3, batch=4, progress=False)
    st = torch.load(tmp_path / "clip.pt", weights_only=False)
    assert st["step"] == 3 and {"clip", "opt", "log"} <= set(st) and "logit_scale" in st["clip"]
    assert (tmp_path / "clip_loss.png").exists()
    te = CLIPTextModel.from_pretrained(out / "text_encoder")
    trained = {k[len("text_encoder."):]: v for k, v in st["clip"].items() if k.startswith("text_encoder.")}
    assert all(torch.equal(v, trained[k]) for k, v in te.state_dict().items())
    assert not all(torch.equal(v, mini_components()["text_encoder"].state_dict()[k]) for k, v in trained.items())
    recipe.train_unet(tmp_path, steps=1, batch=2, progress=False, text_init=out, train_text=False)
    _, frozen = recipe.load_unet_and_text(tmp_path)
    assert all(torch.equal(v, te.state_dict()[k]) for k, v in frozen.state_dict().items())


def test_recipe_cli_runs_the_clip_stage(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(clip, "train_clip", lambda work, **kw: seen.update(work=work, **kw) or tmp_path)
    recipe.main(["clip", "--work", str(tmp_path), "--steps", "7", "--out", str(tmp_path / "te")])
    assert seen == {"work": tmp_path, "steps": 7, "out": tmp_path / "te"}


def test_word_similarity_reads_the_filled_in_word():
    te, tok = mini_components()["text_encoder"], load_tokenizer()
    colours = ["red", "blue", "green"]
    ids = tok([f"a {c} circle" for c in colours], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        h = F.normalize(te(ids)[0][:, 2], dim=-1)  # BOS, a, colour
    assert torch.allclose(clip.word_similarity(te, tok, "a {} circle", colours), h @ h.T, atol=1e-6)
    assert torch.equal(clip.shape_word_similarity(te, tok), clip.word_similarity(te, tok, "a red {}", clip.SHAPE_PROBE))
    with pytest.raises(ValueError, match="one token"):
        clip.word_similarity(te, tok, "a {} circle", ["red", "ultramarine-ish"])
    with pytest.raises(ValueError, match="exactly one"):
        clip.word_similarity(te, tok, "a red circle", colours)
