"""The fusion methods a user can choose, by name."""

from __future__ import annotations

from ..errors import InputError
from .base import FusionMethod, TileResult

METHODS = ("pdmnet", "wavelet", "pyramid", "argmax")
DEFAULT_METHOD = "pdmnet"


def get_method(name: str, device: str = "auto", weights: str | None = None) -> FusionMethod:
    """Build the method called ``name``; only PDMNet uses ``device`` and ``weights``."""
    if name == "pdmnet":
        from .pdmnet import PDMNetMethod

        return PDMNetMethod(device=device, weights=weights)
    if weights is not None and name in METHODS:
        raise InputError(
            f"Weights apply to the pdmnet method only, not to {name}; drop the weights or choose "
            "pdmnet."
        )
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
