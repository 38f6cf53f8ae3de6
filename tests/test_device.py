import pytest
import torch

from sdlearn.device import make_generator, pick_device, pick_dtype


def test_pick_device_explicit_and_default():
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device().type in {"cuda", "mps", "cpu"}


def test_dtype_rules():
    assert pick_dtype("cpu") == torch.float32
    assert pick_dtype("cuda") == torch.float16
    assert pick_dtype("cpu", "fp32") == torch.float32
    assert pick_dtype("cuda", torch.bfloat16) == torch.bfloat16


def test_fp16_on_cpu_falls_back_with_warning():
    with pytest.warns(UserWarning, match="float32"):
        assert pick_dtype("cpu", torch.float16) == torch.float32


def test_generator_is_on_cpu_and_reproducible():
    a = torch.randn(5, generator=make_generator(42))
    b = torch.randn(5, generator=make_generator(42))
    c = torch.randn(5, generator=make_generator(43))
    assert make_generator(0).device.type == "cpu"
    assert torch.equal(a, b) and not torch.equal(a, c)
