import warnings

import pytest
import torch

import torch.nn.functional as F

from sdlearn.text import (cfg_batch, embed, embedding_tables, encode_embeddings, encode_prompts, input_embeddings,
                          prompt_similarity, token_table, tokenize)

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


def test_encode_embeddings_matches_the_text_encoder(tiny_pipe):
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    ids = tokenize(tok, ["a red circle on the left", "a blue star"])
    ref = te(ids).last_hidden_state
    got = encode_embeddings(te, input_embeddings(te, ids))
    assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-5)
    # the mask is causal: changing position 3's input leaves positions 0..2 alone
    x = input_embeddings(te, ids[:1])
    x2 = x.clone()
    x2[0, 3] += 1.0
    a, b = encode_embeddings(te, x), encode_embeddings(te, x2)
    assert torch.allclose(a[0, :3], b[0, :3], atol=1e-6) and not torch.allclose(a[0, 3:], b[0, 3:])
    # swapping a word's token vector is the same as tokenizing the other word
    tables = embedding_tables(te)
    red, blue = tok.convert_tokens_to_ids(["red</w>", "blue</w>"])
    x3 = x.clone()
    x3[0, 2] += tables.token_embedding.weight[blue] - tables.token_embedding.weight[red]
    assert torch.allclose(encode_embeddings(te, x3), embed(te, tokenize(tok, "a blue circle on the left")), atol=1e-5)
    with pytest.raises(ValueError, match="input_embeds must be"):
        encode_embeddings(te, ids)


def test_prompt_similarity_on_words_and_eos():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, 77, 8, generator=g), torch.randn(1, 77, 8, generator=g)
    ids_a = torch.tensor([[BOS, 320, 736, EOS] + [EOS] * 73])   # EOS at 3
    ids_b = torch.tensor([[BOS, 320, 736, 7117, 525, EOS] + [EOS] * 71])  # EOS at 5
    va, vb = a[0, 1:6].flatten(), b[0, 1:6].flatten()  # words of both, up to the later EOS
    assert prompt_similarity(a, b, positions="words", ids=(ids_a, ids_b)) == pytest.approx(
        F.cosine_similarity(va, vb, dim=0).item(), abs=1e-6)
    assert prompt_similarity(a, b, positions="eos", ids=(ids_a, ids_b)) == pytest.approx(
        F.cosine_similarity(a[0, 3], b[0, 5], dim=0).item(), abs=1e-6)
    # identical padding after the words moves "all" towards 1 but leaves "words" alone
    a2, b2 = a.clone(), b.clone()
    a2[0, 6:] = b2[0, 6:] = 5.0
    assert prompt_similarity(a2, b2) > 0.9
    assert prompt_similarity(a2, b2, positions="words", ids=(ids_a, ids_b)) == pytest.approx(
        prompt_similarity(a, b, positions="words", ids=(ids_a, ids_b)), abs=1e-6)
    assert prompt_similarity(a, b, positions="all") == pytest.approx(prompt_similarity(a, b), abs=0)
    with pytest.raises(ValueError, match="needs ids"):
        prompt_similarity(a, b, positions="words")
    with pytest.raises(ValueError, match="positions must be one of"):
        prompt_similarity(a, b, positions="padding", ids=(ids_a, ids_b))
    with pytest.raises(ValueError, match="no EOS"):
        prompt_similarity(a, b, positions="eos", ids=(ids_a[:, :3], ids_b))
    with pytest.raises(ValueError, match="must both be"):
        prompt_similarity(a, b[:, :10])


def test_eos_similarity_uses_the_pooled_output(tiny_pipe):
    tok, te = tiny_pipe.tokenizer, tiny_pipe.text_encoder
    ia, ib = tokenize(tok, "a red circle"), tokenize(tok, "a blue star on a yellow background")
    oa, ob = te(ia), te(ib)
    ref = F.cosine_similarity(oa.pooler_output[0], ob.pooler_output[0], dim=0).item()
    assert prompt_similarity(oa.last_hidden_state, ob.last_hidden_state, positions="eos",
                             ids=(ia, ib)) == pytest.approx(ref, abs=1e-6)
