"""Physical sizes as files record them: units to micrometres, times to seconds, values checked.

A Z step or pixel size read from a file scales the focus map and travels to every output, so a
value that is no size at all (zero, negative, NaN, infinite: a broken writer, a bad
calibration) is dropped here with a warning rather than turning into an all-NaN or negative
focus map far downstream.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..errors import PdmFuseWarning

#: Length units as written by ImageJ, OME, OME-Zarr and TIFF tags, to micrometres.
_UNIT_NAMES = {
    "um": "um",
    "\u00b5m": "um",
    "\u03bcm": "um",
    "micron": "um",
    "microns": "um",
    "micrometer": "um",
    "micrometre": "um",
}
_UNIT_SCALE_TO_UM = {
    "nm": 1e-3,
    "nanometer": 1e-3,
    "mm": 1e3,
    "millimeter": 1e3,
    "cm": 1e4,
    "centimeter": 1e4,
    "m": 1e6,
    "meter": 1e6,
    "in": 25400.0,
    "inch": 25400.0,
}

#: Time units as ImageJ, OME and OME-Zarr write them, to seconds.
_SECONDS = {
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
}


@dataclass(frozen=True)
class Scale:
    """Physical sizes read from a file, in ``unit`` ("um" for micrometres), None when absent."""

    z_spacing: float | None = None
    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None
    time_interval: float | None = None  # seconds between time points


def unit(name: object) -> tuple[str | None, float]:
    """Normalised unit name and factor to micrometres (1 for unknown units, kept as given)."""
    if not isinstance(name, str) or not name.strip():
        return None, 1.0
    text = name.strip().encode().decode("unicode_escape") if "\\u" in name else name.strip()
    key = text.lower()
    if key in _UNIT_NAMES:
        return "um", 1.0
    if key in _UNIT_SCALE_TO_UM:
        return "um", _UNIT_SCALE_TO_UM[key]
    if key in ("pixel", "pixels", "px"):
        return None, 1.0
    return text, 1.0


def seconds(value: object, unit: object) -> float | None:
    """A time step in seconds, or None when it is missing, not positive or in unknown units."""
    factor = _SECONDS.get(str(unit).strip().lower())
    if not isinstance(value, (int, float)) or factor is None:
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value) * factor


def _is_size(value: float) -> bool:
    return math.isfinite(value) and value > 0


def checked(scale: Scale, path: Path | str) -> Scale:
    """``scale`` without a Z step or pixel size that is not a finite positive number, each
    dropped with a PdmFuseWarning naming the file's value; the unit goes with the last size."""
    z, pixel = scale.z_spacing, scale.pixel_size
    if z is not None and not _is_size(z):
        warnings.warn(
            PdmFuseWarning(
                f"{path} records a Z step of {z:g}, which is no size, so the file's value is "
                "ignored; give the step with --z-spacing for a focus map in µm."
            ),
            stacklevel=2,
        )
        z = None
    if pixel is not None and not all(_is_size(s) for s in pixel):
        warnings.warn(
            PdmFuseWarning(
                f"{path} records a pixel size of {pixel[0]:g} × {pixel[1]:g}, which is no size, "
                "so the file's value is ignored and the outputs carry no pixel size."
            ),
            stacklevel=2,
        )
        pixel = None
    unit_name = scale.unit if z is not None or pixel is not None else None
    return Scale(z_spacing=z, pixel_size=pixel, unit=unit_name, time_interval=scale.time_interval)
