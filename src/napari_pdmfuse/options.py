"""The options of a fusion: one object, checked once, built by every way in.

The command line, the widget, the Python API and cluster workers all describe a job with one
:class:`FuseOptions`, so a choice list or a rule between options lives here alone and every
front end refuses the same mistakes with the same sentence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from .errors import InputError
from .methods import DEFAULT_METHOD, DEFAULT_SELECTION, METHODS, SELECTIONS, hard_refusal
from .model.device import DEVICES

#: How channels decide focus: one map for all channels, or one per channel.
CHANNEL_MODES = ("combined", "separate")

#: Plane alignment models (None: no alignment).
ALIGN_MODELS = ("translation", "similarity")

#: Units of the focus map.
FOCUS_UNITS = ("slices", "um")

__all__ = [
    "ALIGN_MODELS",
    "CHANNEL_MODES",
    "DEFAULT_SELECTION",
    "DEVICES",
    "FOCUS_UNITS",
    "METHODS",
    "SELECTIONS",
    "FuseOptions",
]


def _choice(kind: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"Unknown {kind} {value!r}; choose one of {', '.join(choices)}.")


@dataclass(frozen=True)
class FuseOptions:
    """How to fuse: method and where it runs, tiles, channels, alignment, focus-map units.

    ``focus_units`` None means slices unless ``z_spacing`` (µm between planes) is given;
    ``"um"`` without ``z_spacing`` takes the Z step the file records. ``selection`` (PDMNet
    only) is ``"blend"`` or ``"hard"`` (each pixel copied from its highest-weight slice).
    ``retouch`` replaces fused pixels by planes or other fusions where a label mask says so
    (:mod:`napari_pdmfuse.retouch`); a path or an array given is read into a ``RetouchMask``.
    """

    method: str = DEFAULT_METHOD
    device: str = "auto"
    weights: str | None = None
    tile: int | None = None
    channel_mode: str = "combined"
    focus_channel: int | None = None
    align: str | None = None
    correct_brightness: bool = False
    focus_units: str | None = None
    z_spacing: float | None = None
    selection: str = DEFAULT_SELECTION  # last: earlier positional arguments keep their place
    # A retouch mask (napari_pdmfuse.retouch.RetouchMask), a label array or a mask TIFF's path.
    retouch: Any = None

    def __post_init__(self) -> None:
        if self.retouch is not None:
            from .retouch import as_mask

            object.__setattr__(self, "retouch", as_mask(self.retouch))
        _choice("method", self.method, METHODS)
        _choice("device", self.device, DEVICES)
        _choice("selection", self.selection, SELECTIONS)
        _choice("channel mode", self.channel_mode, CHANNEL_MODES)
        if self.align is not None:
            _choice("alignment model", self.align, ALIGN_MODELS)
        if self.focus_units is not None:
            _choice("focus-map unit", self.focus_units, FOCUS_UNITS)
        if self.weights is not None and self.method != "pdmnet":
            raise InputError(
                f"Weights apply to the pdmnet method only, not to {self.method}; drop the "
                "weights or choose pdmnet."
            )
        if self.selection != DEFAULT_SELECTION and self.method != "pdmnet":
            raise InputError(hard_refusal(self.method))
        if self.tile is not None and (not isinstance(self.tile, int) or self.tile <= 0):
            raise InputError(f"Tile size {self.tile!r} is not a positive whole number of pixels.")
        if self.z_spacing is not None and not (
            isinstance(self.z_spacing, (int, float))
            and math.isfinite(self.z_spacing)
            and self.z_spacing > 0
        ):
            raise InputError(
                f"The Z spacing {self.z_spacing!r} is not a positive number of micrometres."
            )
        if self.focus_units == "slices" and self.z_spacing is not None:
            raise InputError(
                "A Z spacing gives the focus map in µm but the focus-map unit asked for is "
                "slices; drop one of them."
            )
        if self.focus_channel is not None:
            if not isinstance(self.focus_channel, int) or self.focus_channel < 0:
                raise InputError(
                    f"Focus channel {self.focus_channel!r} is not a channel number (0, 1, …)."
                )
            if self.channel_mode == "separate":
                raise InputError(
                    "A focus channel applies to the combined channel mode only; in the separate "
                    "mode every channel decides for itself."
                )

    @property
    def physical_focus(self) -> bool:
        """Whether the focus map is asked for in micrometres."""
        return self.focus_units == "um" or (self.focus_units is None and self.z_spacing is not None)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> FuseOptions:
        """Options from a mapping holding these names among others (e.g. parsed arguments)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
