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

__all__ = ["tokenize", "token_table", "embedding_tables", "input_embeddings", "embed", "encode_prompts", "cfg_batch",
           "prompt_similarity"]


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

    The token table says *what* a token is, the position table *where* it is: the transformer
    itself has no notion of order, so "red circle, blue square" and "blue circle, red square"
    would look alike without it.

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


def prompt_similarity(a: torch.Tensor, b: torch.Tensor, skip_bos: bool = True) -> float:
    """Cosine similarity of two prompt embeddings ``(1, 77, hidden)``, flattened.

    Position 0 (BOS) is skipped by default: with causal attention it sees only itself, so it is
    the same vector for every prompt and would push every similarity towards 1.

    Introduced in notebooks/02_tokenizer_text_encoder.ipynb.
    """
    start = 1 if skip_bos else 0
    va, vb = a[..., start:, :].flatten().float(), b[..., start:, :].flatten().float()
    return F.cosine_similarity(va, vb, dim=0).item()
