"""From a prompt to the (1, 77, hidden) tensor the UNet reads: tokenizer and CLIP text encoder.

The tokenizer cuts the prompt into CLIP's byte-pair sub-words and maps them to ids between a
start token (BOS, 49406) and an end token (EOS, 49407), padded to 77 positions; anything longer
is cut off. The text encoder adds a learned position vector to each token's vector and runs
a causal transformer over the 77 positions. Its last hidden state — every position, not just one
pooled vector — is what the UNet's cross-attention layers look at.

Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from .models import Pipeline

__all__ = ["tokenize", "token_table", "embedding_tables", "input_embeddings", "embed", "encode_embeddings",
           "encode_prompts", "cfg_batch", "prompt_similarity"]

SIMILARITY_POSITIONS = ("all", "words", "eos")


def tokenize(tokenizer: Any, prompt: str | list[str]) -> torch.Tensor:
    """Token ids, ``(B, model_max_length)``, padded and truncated exactly as SD pipelines do.

    If a prompt is longer than the model's window (77 for CLIP), the tail is dropped: we warn
    with the dropped words, because a silently ignored half-prompt is a common surprise.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    n = tokenizer.model_max_length
    ids = tokenizer(prompt, padding="max_length", max_length=n, truncation=True,
                    return_tensors="pt").input_ids
    dropped = []
    # verbose=False: the tokenizer's own "sequence is longer than 77" log line says less than we do.
    full = tokenizer(prompt, truncation=False, verbose=False).input_ids
    for row in full if isinstance(prompt, list) else [full]:
        # The window keeps BOS + n-2 tokens + EOS; what lies between there and the EOS is lost.
        if len(row) > n:
            dropped.append(tokenizer.decode(row[n - 1:-1]))
    if dropped:
        warnings.warn(f"prompt longer than {n} tokens; this part was cut off: {' | '.join(dropped)!r}",
                      UserWarning, stacklevel=2)
    return ids


def token_table(tokenizer: Any, ids: torch.Tensor, until_eos: bool = True) -> list[tuple[int, int, str]]:
    """(position, id, token) for one prompt's ids, up to and including the first EOS.

    Tokens ending in ``</w>`` close a word; a word without it continues in the next token
    (e.g. ``floo`` + ``ble</w>``). ``until_eos=False`` also lists the padding.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    row = [int(i) for i in (ids[0] if ids.ndim == 2 else ids)]
    if until_eos and tokenizer.eos_token_id in row:
        row = row[: row.index(tokenizer.eos_token_id) + 1]
    return [(pos, i, tok) for pos, (i, tok) in enumerate(zip(row, tokenizer.convert_ids_to_tokens(row)))]


def embedding_tables(text_encoder: Any) -> torch.nn.Module:
    """The module holding ``token_embedding`` and ``position_embedding``.

    transformers 4 nested it as ``text_encoder.text_model.embeddings``; transformers 5 flattened
    ``CLIPTextModel`` to ``text_encoder.embeddings``. We accept both.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return getattr(text_encoder, "text_model", text_encoder).embeddings


@torch.no_grad()
def input_embeddings(text_encoder: Any, ids: torch.Tensor) -> torch.Tensor:
    """What enters the first transformer layer: token embedding + position embedding.

    The token table says *what* a token is, the position table *where* it is. Attention alone
    treats its inputs as a set; CLIP's causal mask still gives each position its prefix, so even
    without the position table "a red circle and a blue square" and "a blue circle and a red
    square" would not encode alike, but the position table is what says where each word is.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    emb = embedding_tables(text_encoder)
    ids = ids.to(emb.token_embedding.weight.device)
    positions = torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0)
    return emb.token_embedding(ids) + emb.position_embedding(positions)


@torch.no_grad()
def embed(text_encoder: Any, ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's last hidden state for the ids: ``(B, 77, hidden_size)``.

    SD 1.5 uses all 77 positions (after CLIP's final layer norm), padding included, and passes
    no attention mask, so the padding positions carry information about the prompt too.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return text_encoder(ids.to(text_encoder.device))[0]


@torch.no_grad()
def encode_embeddings(text_encoder: Any, input_embeds: torch.Tensor) -> torch.Tensor:
    """The text encoder from given input embeddings ``(B, T, hidden)`` on: the layers under a
    causal mask, then the final layer norm. ``encode_embeddings(te, input_embeddings(te, ids))``
    equals ``te(ids).last_hidden_state``; any other vectors (a swapped or mixed word) may go in.

    The mask is additive, ``(B, 1, T, T)``: 0 where position *i* may look at *j* (j <= i), the
    dtype's most negative number above the diagonal, passed to every
    ``CLIPEncoderLayer(hidden_states, mask)``. (``CLIPTextModel`` itself lets SDPA apply the
    same pattern via ``is_causal=True``; an explicit mask works with every attention kind.)

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    model = getattr(text_encoder, "text_model", text_encoder)
    hidden = model.config.hidden_size
    if input_embeds.ndim != 3 or input_embeds.shape[-1] != hidden:
        raise ValueError(f"input_embeds must be (batch, positions, {hidden}), got {tuple(input_embeds.shape)}")
    h = input_embeds.to(model.final_layer_norm.weight.device, model.final_layer_norm.weight.dtype)
    batch, n = h.shape[:2]
    mask = torch.full((n, n), torch.finfo(h.dtype).min, dtype=h.dtype, device=h.device).triu(1)
    mask = mask.expand(batch, 1, n, n)
    for layer in model.encoder.layers:
        h = layer(h, mask)
    return model.final_layer_norm(h)


def encode_prompts(pipe: Pipeline, prompt: str | list[str],
                   negative_prompt: str | list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cond, uncond)`` embeddings for classifier-free guidance via the public ``encode_prompt``.

    ``uncond`` is the embedding of ``negative_prompt``, or of the empty prompt ``""`` when there
    is none: a negative prompt simply *replaces* the unconditional branch.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(prompt, device=pipe.text_encoder.device, num_images_per_prompt=1,
                                          do_classifier_free_guidance=True, negative_prompt=negative_prompt)
    return cond, uncond


def cfg_batch(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """The batch the UNet gets under guidance: ``torch.cat([uncond, cond])``, unconditional first.

    This is the layout the deprecated ``pipe._encode_prompt`` returned and what the pipeline
    still builds inside ``__call__``; one UNet call then serves both branches.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    return torch.cat([uncond, cond])


def _eos_position(ids: torch.Tensor, eos_token_id: int) -> int:
    row = ids[0] if ids.ndim == 2 else ids
    hits = (row == eos_token_id).nonzero()
    if len(hits) == 0:
        raise ValueError(f"ids hold no EOS token ({eos_token_id})")
    return int(hits[0])


def prompt_similarity(a: torch.Tensor, b: torch.Tensor, skip_bos: bool = True, *, positions: str = "all",
                      ids: tuple[torch.Tensor, torch.Tensor] | None = None, eos_token_id: int = 49407) -> float:
    """Cosine similarity of two prompt embeddings ``(1, 77, hidden)``, flattened over ``positions``:

    * ``"all"``: every position (position 0, BOS, skipped unless ``skip_bos=False``: with causal
      attention it sees only itself, the same vector for every prompt). Most of them are padding,
      which changes slowly along the window, so different prompts still score near 1.
    * ``"words"``: positions 1 up to and including the later of the two first EOS tokens: the
      words of both prompts, their EOS, no padding after that.
    * ``"eos"``: the vector at each prompt's first EOS only (CLIP's pooled output).

    ``"words"`` and ``"eos"`` need ``ids=(ids_a, ids_b)``, the token ids the embeddings came from.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    if positions not in SIMILARITY_POSITIONS:
        raise ValueError(f"positions must be one of {SIMILARITY_POSITIONS}, got {positions!r}")
    if a.shape != b.shape or a.ndim != 3 or a.shape[0] != 1:
        raise ValueError(f"a and b must both be (1, positions, hidden), got {tuple(a.shape)} and {tuple(b.shape)}")
    if positions == "all":
        start = 1 if skip_bos else 0
        va, vb = a[0, start:], b[0, start:]
    else:
        if ids is None:
            raise ValueError(f"positions={positions!r} needs ids=(ids_a, ids_b) to find each prompt's EOS")
        ea, eb = _eos_position(ids[0], eos_token_id), _eos_position(ids[1], eos_token_id)
        if positions == "eos":
            va, vb = a[0, ea], b[0, eb]
        else:
            end = max(ea, eb) + 1
            va, vb = a[0, 1:end], b[0, 1:end]
    return F.cosine_similarity(va.flatten().float(), vb.flatten().float(), dim=0).item()
