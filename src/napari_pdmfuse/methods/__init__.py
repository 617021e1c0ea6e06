"""The fusion methods a user can choose, by name."""

from __future__ import annotations

from ..errors import InputError
from .base import FusionMethod, TileResult

METHODS = ("pdmnet", "wavelet", "pyramid", "argmax")
DEFAULT_METHOD = "pdmnet"


def get_method(name: str, device: str = "auto") -> FusionMethod:
    """Build the method called ``name``; only PDMNet uses ``device``."""
    if name == "pdmnet":
        from .pdmnet import PDMNetMethod

        return PDMNetMethod(device=device)
    if name == "wavelet":
        from .wavelet import WaveletMethod

        return WaveletMethod()
    if name == "pyramid":
        from .pyramid import PyramidMethod

        return PyramidMethod()
    if name == "argmax":
        from .argmax import ArgmaxMethod

        return ArgmaxMethod()
    raise InputError(f"Unknown method {name!r}; choose one of {', '.join(METHODS)}.")


__all__ = ["DEFAULT_METHOD", "METHODS", "FusionMethod", "TileResult", "get_method"]
