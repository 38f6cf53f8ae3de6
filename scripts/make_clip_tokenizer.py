"""Derive the CLIP tokenizer files (vocab.json, merges.txt) shipped in sdlearn/data/tokenizer/.

The real CLIP BPE merges ship inside the PyPI package ``clip-anytorch`` (MIT, OpenAI) as
``clip/bpe_simple_vocab_16e6.txt.gz``. That package depends on torchvision, which breaks
diffusers/transformers here, so we never install it: we download the wheel once without its
dependencies and rebuild the 49,408-entry vocabulary exactly as ``clip/simple_tokenizer.py`` does.

Usage (run once; the outputs are committed)::

    pip download --no-deps clip-anytorch==2.6.0 -d /tmp/clip
    python scripts/make_clip_tokenizer.py /tmp/clip/clip_anytorch-2.6.0-py3-none-any.whl
"""
from __future__ import annotations

import gzip
import json
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "sdlearn" / "data" / "tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    # Copied from CLIP's simple_tokenizer.py: a reversible byte -> printable-unicode table.
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        raw = z.read("clip/bpe_simple_vocab_16e6.txt.gz")
        licence = z.read("clip_anytorch-2.6.0.dist-info/LICENSE").decode()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408, len(vocab)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (OUT / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    # Same special tokens and padding as SD 1.5's tokenizer (pad = <|endoftext|>, 77 tokens).
    (OUT / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, indent=2))
    (OUT / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
        "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, indent=2))
    (OUT / "LICENSE-CLIP.txt").write_text(
        "vocab.json and merges.txt are derived from bpe_simple_vocab_16e6.txt.gz of OpenAI's CLIP,\n"
        "as shipped in the PyPI package clip-anytorch==2.6.0, by scripts/make_clip_tokenizer.py.\n\n" + licence)
    print(f"wrote {len(vocab)} tokens, {len(merges)} merges to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
