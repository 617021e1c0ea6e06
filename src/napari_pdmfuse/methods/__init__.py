"""The fusion methods a user can choose, by name."""

from __future__ import annotations

import threading

from ..errors import InputError
from .base import FusionMethod, TileResult

METHODS = ("pdmnet", "wavelet", "pyramid", "argmax")
DEFAULT_METHOD = "pdmnet"

#: How PDMNet's slice weights make a fused pixel: a softmax blend of the slices, or the one
#: slice of highest weight, so that every value is one the stack holds (for intensity
#: measurements). Here rather than in options, which imports this module.
SELECTIONS = ("blend", "hard")
DEFAULT_SELECTION = "blend"


def hard_refusal(name: str) -> str:
    """Why a method other than PDMNet takes no hard selection, and what to do."""
    return (
        f"The hard selection applies to the pdmnet method only, not to {name}, which picks or "
        "mixes slices its own way; choose pdmnet or the blend selection."
    )


def get_method(
    name: str,
    device: str = "auto",
    weights: str | None = None,
    selection: str = DEFAULT_SELECTION,
) -> FusionMethod:
    """Build the method called ``name``; only PDMNet uses ``device``, ``weights`` and
    ``selection`` (options.FuseOptions refuses them for the others with a sentence)."""
    if selection not in SELECTIONS:
        raise InputError(f"Unknown selection {selection!r}; choose one of {', '.join(SELECTIONS)}.")
    if name == "pdmnet":
        from .pdmnet import PDMNetMethod

        return PDMNetMethod(device=device, weights=weights, selection=selection)
    if weights is not None and name in METHODS:
        raise InputError(
            f"Weights apply to the pdmnet method only, not to {name}; drop the weights or choose "
            "pdmnet."
        )
    if selection != DEFAULT_SELECTION and name in METHODS:
        raise InputError(hard_refusal(name))
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


#: Methods built in this process, by (name, device, weights, selection): a model is loaded
#: once, so the widget's second fusion, a batch's next stack and a cluster worker's next tile
#: start at once.
_BUILT: dict[tuple[str, str, str | None, str], FusionMethod] = {}
_LOCK = threading.Lock()
_BUILDS: dict[str, int] = {}


def cached_method(
    name: str,
    device: str = "auto",
    weights: str | None = None,
    selection: str = DEFAULT_SELECTION,
) -> FusionMethod:
    """The method ``name``, built on the first call in this process and reused after."""
    key = (name, device, None if weights is None else str(weights), selection)
    with _LOCK:
        method = _BUILT.get(key)
        if method is None:
            method = get_method(name, device=device, weights=weights, selection=selection)
            _BUILT[key] = method
            _BUILDS[name] = _BUILDS.get(name, 0) + 1
    return method


def build_counts() -> dict[str, int]:
    """How many times this process built each method, by name."""
    return dict(_BUILDS)


__all__ = [
    "DEFAULT_METHOD",
    "DEFAULT_SELECTION",
    "METHODS",
    "SELECTIONS",
    "FusionMethod",
    "TileResult",
    "build_counts",
    "cached_method",
    "get_method",
    "hard_refusal",
]
