"""Notebook 12's three methods, at toy scale on the tiny pipeline: each lowers its own loss, trains
only what it says, and saves files that diffusers' own loaders read back (on sd-mini: its small
text encoder keeps the embedding table cheap to train)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sdlearn.personalisation import concept_data, concept_loss, private_copy, trainable_parameters
from sdlearn.personalisation.dreambooth import train_dreambooth
from sdlearn.personalisation.lora import add_lora, save_lora, train_lora
from sdlearn.personalisation.textual_inversion import (WEIGHT_NAME, add_concept_token, save_textual_inversion,
                                                       train_textual_inversion)


def _pictures(n: int = 4, size: int = 64) -> list[np.ndarray]:
    """A bright disc on a dark ground, in n colours: a 'concept' any UNet can fit a little."""
    yy, xx = np.mgrid[0:size, 0:size]
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 4) ** 2
    out = []
    for k in range(n):
        img = np.full((size, size, 3), 30, np.uint8)
        img[disc] = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)][k % 4]
        out.append(img)
    return out


@pytest.fixture()
def pipe(quiet_pipeline):
    return private_copy(quiet_pipeline("mini"))  # its own modules: the methods change them


def _image(pipe, prompt: str, **kw) -> np.ndarray:
    out = pipe(prompt, num_inference_steps=2, guidance_scale=1.0, height=64, width=64, output_type="np",
               generator=torch.Generator().manual_seed(0), **kw)
    return out.images[0]


def test_private_copy_leaves_the_shared_modules_alone(pipe, quiet_pipeline) -> None:
    shared = quiet_pipeline("mini")
    assert pipe.unet is not shared.unet and pipe.text_encoder is not shared.text_encoder
    assert pipe.tokenizer is not shared.tokenizer and pipe.vae is shared.vae
    add_concept_token(pipe, "<only-here>", "circle")
    assert "<only-here>" not in shared.tokenizer.get_vocab()
    assert shared.text_encoder.get_input_embeddings().weight.shape[0] == 49408


def test_concept_data_checks_before_compute(pipe) -> None:
    with pytest.raises(ValueError, match="as many captions"):
        concept_data(pipe, _pictures(2), ["one"])
    with pytest.raises(ValueError, match="share one"):
        concept_data(pipe, [_pictures(1)[0], np.zeros((32, 32, 3), np.uint8)], ["a", "b"])


def test_textual_inversion_trains_one_row_and_round_trips(pipe, quiet_pipeline, tmp_path) -> None:
    token_id = add_concept_token(pipe, "<disc>", "circle")
    before = {k: v.clone() for k, v in pipe.text_encoder.state_dict().items()}
    unet_before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    data = concept_data(pipe, _pictures(), [f"a {c} <disc>" for c in ("red", "green", "blue", "yellow")])
    before_loss = concept_loss(pipe, data)
    train_textual_inversion(pipe, data, token_id, steps=60, lr=5e-2, batch=4, progress=False)
    assert concept_loss(pipe, data) < before_loss
    after = pipe.text_encoder.state_dict()
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert len(changed) == 1 and changed[0].endswith("token_embedding.weight"), changed
    rows = (after[changed[0]] != before[changed[0]]).any(dim=1).nonzero().flatten().tolist()
    assert rows == [token_id]  # the new token's row, and no other, moved
    assert all(torch.equal(v, unet_before[k]) for k, v in pipe.unet.state_dict().items())
    assert trainable_parameters([after[changed[0]]], rows=1) == pipe.text_encoder.config.hidden_size
    path = save_textual_inversion(pipe, "<disc>", tmp_path)
    assert path.name == WEIGHT_NAME
    fresh = private_copy(quiet_pipeline("mini"))
    plain = _image(fresh, "a <disc>")
    fresh.load_textual_inversion(tmp_path, token="<disc>")
    loaded = fresh.text_encoder.get_input_embeddings().weight[fresh.tokenizer.convert_tokens_to_ids("<disc>")]
    assert torch.equal(loaded, pipe.text_encoder.get_input_embeddings().weight[token_id])
    assert not np.array_equal(_image(fresh, "a <disc>"), plain)  # the learnt word changes the picture


def test_add_concept_token_errors(pipe) -> None:
    with pytest.raises(ValueError, match="one token"):
        add_concept_token(pipe, "<x>", "a long phrase")
    with pytest.raises(ValueError, match="already a token"):
        add_concept_token(pipe, "red", "circle")


def test_lora_trains_adapters_only_and_scale_zero_is_the_base(pipe, quiet_pipeline, tmp_path) -> None:
    base = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    params = add_lora(pipe.unet, rank=2)
    assert params and trainable_parameters(params) < sum(v.numel() for v in base.values()) / 5
    data = concept_data(pipe, _pictures(), ["a disc"] * 4)
    before_loss = concept_loss(pipe, data)
    train_lora(pipe, data, params, steps=60, lr=1e-2, batch=4, progress=False)
    assert concept_loss(pipe, data) < before_loss
    sd = pipe.unet.state_dict()
    for k, v in base.items():  # peft wraps the projections: their base weights stay as they were
        key = k if k in sd else k.replace(".weight", ".base_layer.weight").replace(".bias", ".base_layer.bias")
        assert torch.equal(sd[key], v), k
    path = save_lora(pipe, tmp_path)
    assert path.exists()
    fresh = private_copy(quiet_pipeline("mini"))
    plain = _image(fresh, "a disc")
    fresh.load_lora_weights(tmp_path, adapter_name="disc")
    fresh.set_adapters(["disc"], adapter_weights=[0.0])
    assert np.array_equal(_image(fresh, "a disc"), plain)  # scale 0: exactly the base model
    fresh.set_adapters(["disc"], adapter_weights=[1.0])
    assert not np.array_equal(_image(fresh, "a disc"), plain)


def test_dreambooth_with_and_without_prior(pipe) -> None:
    data = concept_data(pipe, _pictures(), ["a sks"] * 4)
    prior = concept_data(pipe, [255 - p for p in _pictures()], ["a square"] * 4)
    before_loss = concept_loss(pipe, data)
    train_dreambooth(pipe, data, prior=prior, steps=40, lr=1e-3, batch=4, progress=False)
    assert concept_loss(pipe, data) < before_loss
    assert not any(p.requires_grad for p in pipe.unet.parameters())  # frozen again afterwards
    with pytest.raises(ValueError, match="prior_weight"):
        train_dreambooth(pipe, data, prior=prior, prior_weight=0.0, steps=1)
