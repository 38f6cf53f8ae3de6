import warnings

import pytest
import torch

from sdlearn.text import (cfg_batch, embed, embedding_tables, encode_prompts, input_embeddings, prompt_similarity,
                          token_table, tokenize)

BOS, EOS = 49406, 49407


def test_tokenize_pads_to_77_with_bos_and_eos(tiny_pipe):
    tok = tiny_pipe.tokenizer
    ids = tokenize(tok, "a photo of a cat")
    assert ids.shape == (1, 77)
    assert ids[0, :7].tolist() == [BOS, 320, 1125, 539, 320, 2368, EOS]
    assert (ids[0, 7:] == tok.pad_token_id).all()
    assert tokenize(tok, "").tolist()[0][:2] == [BOS, EOS]
    assert tokenize(tok, ["a cat", "a dog"]).shape == (2, 77)


def test_token_table_shows_subwords(tiny_pipe):
    tok = tiny_pipe.tokenizer
    table = token_table(tok, tokenize(tok, "flooble"))
    assert table == [(0, BOS, "<|startoftext|>"), (1, 4062, "floo"), (2, 1059, "ble</w>"), (3, EOS, "<|endoftext|>")]
    assert len(token_table(tok, tokenize(tok, "flooble"), until_eos=False)) == 77


def test_long_prompt_warns_with_the_dropped_text(tiny_pipe):
    tok = tiny_pipe.tokenizer
    long = "a photo of a cat " * 16 + "wearing a tiny red hat"  # 1 + 80 + 5 + 1 = 87 tokens
    with pytest.warns(UserWarning, match="cut off: 'a photo of a cat wearing a tiny red hat'"):
        ids = tokenize(tok, long)
    assert ids.shape == (1, 77) and ids[0, -1].item() == EOS
    # the kept part is exactly the first 75 words' tokens
    full = tok(long, truncation=False, verbose=False).input_ids
    assert ids[0, :76].tolist() == full[:76]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenize(tok, "a photo of a cat " * 15)  # 75 tokens + BOS + EOS = 77 fits: no warning
    with pytest.warns(UserWarning, match="wearing"):
        tokenize(tok, ["a cat", long])


def test_input_embeddings_are_token_plus_position(tiny_pipe):
    te = tiny_pipe.text_encoder
    ids = tokenize(tiny_pipe.tokenizer, "a red circle")
    with torch.no_grad():
        ref = embedding_tables(te)(input_ids=ids)
    assert torch.allclose(input_embeddings(te, ids), ref)
    # the same token ("a") at positions 1 and 2 gets two different input vectors
    x = input_embeddings(te, ids[:, [0, 1, 1]])
    assert not torch.allclose(x[0, 1], x[0, 2])
    tables = embedding_tables(te)
    assert torch.allclose(x[0, 1] - x[0, 2], tables.position_embedding.weight[1] - tables.position_embedding.weight[2],
                          atol=1e-6)


def test_embed_matches_public_encode_prompt(tiny_pipe):
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    cond, uncond = encode_prompts(tiny_pipe, "a red circle")
    hidden = te.config.hidden_size
    assert cond.shape == uncond.shape == (1, tok.model_max_length, hidden)
    assert torch.equal(cond, embed(te, tokenize(tok, "a red circle")))
    assert torch.equal(uncond, embed(te, tokenize(tok, "")))
    _, neg = encode_prompts(tiny_pipe, "a red circle", negative_prompt="blue")
    assert torch.equal(neg, embed(te, tokenize(tok, "blue")))  # the negative prompt replaces ""
    both = cfg_batch(cond, uncond)
    assert both.shape == (2, 77, hidden) and torch.equal(both[0], uncond[0]) and torch.equal(both[1], cond[0])


def test_causal_mask_prefix_is_shared(tiny_pipe):
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    a = embed(te, tokenize(tok, "a red circle on the left"))
    b = embed(te, tokenize(tok, "a red circle on a blue background"))
    # BOS a red circle on: positions 0..4 see only the shared prefix
    assert torch.allclose(a[0, :5], b[0, :5], atol=1e-5)
    assert not torch.allclose(a[0, 5:], b[0, 5:])


def test_prompt_similarity_is_cosine_without_bos():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 77, 8, generator=g), torch.randn(1, 77, 8, generator=g)
    assert prompt_similarity(a, a) == pytest.approx(1.0)
    va, vb = a[0, 1:].flatten(), b[0, 1:].flatten()
    assert prompt_similarity(a, b) == pytest.approx((va @ vb / (va.norm() * vb.norm())).item(), abs=1e-6)
    a2, b2 = a.clone(), b.clone()
    a2[0, 0] = b2[0, 0] = 100.0  # a huge BOS vector shared by both changes nothing when skipped ...
    assert prompt_similarity(a2, b2) == pytest.approx(prompt_similarity(a, b), abs=1e-6)
    assert prompt_similarity(a2, b2, skip_bos=False) > 0.9  # ... and dominates when it is not
