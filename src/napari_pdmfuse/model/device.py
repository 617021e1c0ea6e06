"""Choosing where PDMNet runs: CUDA, then Apple MPS, then the CPU.

torch is imported only when a device is actually resolved, so checking a device name (which every
fusion does, whatever its method) costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device_name(name: object) -> str:
    """Refuse a device name that is not one of :data:`DEVICES`, without importing torch."""
    if not isinstance(name, str) or name not in DEVICES:
        raise InputError(f"Unknown device {name!r}; choose one of {', '.join(DEVICES)}.")
    return name


def resolve_device(name: str) -> torch.device:
    """Turn a user's device choice into a torch device, refusing one that is not there."""
    import torch

    check_device_name(name)
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps and mps.is_available())
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError(
            "CUDA was requested but no CUDA GPU is usable by this PyTorch install; use "
            "--device cpu, or install a CUDA build of torch."
        )
    if name == "mps" and not has_mps:
        raise InputError("Apple MPS was requested but is not available; use --device cpu.")
    return torch.device(name)


def describe_devices() -> str:
    """One line saying which accelerators this machine offers, for the widget and the CLI."""
    import torch

    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)}"
    mps = getattr(torch.backends, "mps", None)
    if mps and mps.is_available():
        return "Apple MPS"
    return "CPU only (no CUDA GPU found)"


@contextmanager
def ieee_float32(device: torch.device) -> Iterator[None]:
    """Run float32 convolutions in full float32 on a CUDA ``device``, where cuDNN defaults to
    TF32; elsewhere nothing changes (the setting is global to the process).

    TF32 keeps 10 bits of mantissa. Emulated on the CPU (inputs and weights of every
    convolution rounded so), it moved the fused image of a 20 × 384² stack by up to 6e-3 of
    the data range and the focus map by up to 0.19 slices: 60 times what tiles may differ
    from the whole image, and cuDNN may choose different algorithms for tiles of different
    shapes. The previous setting comes back afterwards, for other torch code in the process.
    """
    if device.type != "cuda":
        yield
        return
    import torch

    cudnn = torch.backends.cudnn
    conv = getattr(cudnn, "conv", None)
    if hasattr(conv, "fp32_precision"):
        owner, name, value = conv, "fp32_precision", "ieee"
    else:  # torch before 2.9 has the older switch only
        owner, name, value = cudnn, "allow_tf32", False
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)
