"""Where the model runs and in what precision, and where random numbers come from.

Introduced in notebooks/00_quick_tour.ipynb.
"""
from __future__ import annotations

import warnings

import torch


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: ``device`` if given, else cuda > mps > cpu.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: str | torch.device, dtype: torch.dtype | str | None = None) -> torch.dtype:
    """fp16 on CUDA (half the memory, tensor cores), fp32 elsewhere.

    Asking for fp16 on the CPU falls back to fp32 with a warning: many CPU kernels have no
    half-precision version, and the ones that do are slower than fp32.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    device = torch.device(device)
    if isinstance(dtype, str):
        dtype = {"fp16": torch.float16, "float16": torch.float16, "fp32": torch.float32,
                 "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}[dtype]
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype == torch.float16 and device.type == "cpu":
        warnings.warn("float16 is not supported well on the CPU; using float32 instead.", stacklevel=2)
        return torch.float32
    return dtype


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded ``torch.Generator`` for the pipeline's ``generator=`` argument.

    We keep the generator on the **CPU** by default, whatever device the model runs on:
    diffusers draws the starting noise on the generator's device and moves it over, and the CPU
    random stream is the same on every machine, while CUDA's depends on the GPU and its kernels.
    So ``make_generator(0)`` gives the same starting noise (and, on the CPU, the identical image)
    every run. Pass ``device="cuda"`` only if you want CUDA's own, faster stream.

    Introduced in notebooks/00_quick_tour.ipynb.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))
