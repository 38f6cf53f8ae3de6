"""The personalisation explorer, driven headlessly: move the LoRA slider or type a learnt token,
the picture must change; at strength 0 it must be the base model's picture."""
import io

import ipywidgets as widgets
import pytest
import torch
from PIL import Image

from sdlearn.device import make_generator
from sdlearn.personalisation import private_copy
from sdlearn.personalisation.lora import add_lora, save_lora
from sdlearn.personalisation.textual_inversion import add_concept_token, save_textual_inversion
from sdlearn.sampling import sample
from sdlearn.widgets import _png_bytes, personalisation_explorer


def _size(png) -> tuple[int, int]:
    return Image.open(io.BytesIO(bytes(png))).size


@pytest.fixture(scope="module")
def personalised(tiny_pipe, tmp_path_factory):
    """A fresh copy of the tiny pipeline with a LoRA "disc" and a token "<disc>" loaded from files,
    as notebook 12 loads its own. Untrained, so both are made to do something: the adapter's B
    (zero at the start, a no-op) and the token's row get random values."""
    folder = tmp_path_factory.mktemp("personalised")
    donor = private_copy(tiny_pipe)
    params = add_lora(donor.unet, rank=2)
    with torch.no_grad():
        for p in params:
            p.normal_(0, 0.5, generator=torch.Generator().manual_seed(p.numel()))
    save_lora(donor, folder / "lora")
    token_id = add_concept_token(donor, "<disc>", "circle")
    with torch.no_grad():
        donor.text_encoder.get_input_embeddings().weight[token_id].normal_(0, 1.0)
    save_textual_inversion(donor, "<disc>", folder / "ti")
    pipe = private_copy(tiny_pipe)
    pipe.load_lora_weights(folder / "lora", adapter_name="disc")
    pipe.load_textual_inversion(folder / "ti", token="<disc>")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_personalisation_explorer(personalised, tiny_pipe):
    w = personalisation_explorer(personalised, adapter="disc", prompt="a red circle", weight=1.0,
                                 num_inference_steps=2, size=64)
    assert isinstance(w, widgets.VBox) and w.renders == 1
    for c in (w.prompt, w.weight, w.seed):
        assert c.continuous_update is False
    first = bytes(w.image.value)  # ipywidgets 8 stores a memoryview, 7 the bytes
    assert _size(first) == (64, 64) and "'disc' at 1" in w.info.value and "tokens in the prompt: none" in w.info.value

    w.weight.value = 0.0  # strength 0: exactly the base model's picture
    base = sample(tiny_pipe, "a red circle", num_inference_steps=2, generator=make_generator(0))[0]
    assert bytes(w.image.value) == _png_bytes(base, 64) != first and w.renders == 2

    seen = [first, bytes(w.image.value)]
    for control, value in ((w.weight, 1.5), (w.seed, 3), (w.prompt, "a red <disc>")):
        control.value = value
        assert bytes(w.image.value) not in seen, control.description
        seen.append(bytes(w.image.value))
    assert w.renders == 5 and "tokens in the prompt: <disc>" in w.info.value


def test_personalisation_explorer_without_or_with_a_wrong_adapter(personalised):
    with pytest.raises(ValueError, match="no LoRA adapter 'heart'.*disc"):
        personalisation_explorer(personalised, adapter="heart")
    w = personalisation_explorer(personalised, adapter=None, prompt="a <disc>", num_inference_steps=1, size=64)
    assert w.weight.disabled and "no LoRA" in w.info.value and w.renders == 1
