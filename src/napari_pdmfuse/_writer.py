"""napari writer: save an image layer (a fused image, a focus map, a stack) as OME-TIFF.

The file records the layer's physical pixel size — ``PhysicalSizeX/Y/Z`` from the layer's scale,
in the layer's units — so measurements keep working in Fiji, QuPath or OMERO, and napari-pdmfuse's
reader opens it at the same scale. The file appears complete or not at all: it is written to a
hidden temporary file next to the target and moved into place at the end. Qt-free.
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .errors import OutputError
from .writing import atomic_files, check_format

#: OME dimension letter for common axis labels (napari's, OME-NGFF's, ImageJ's).
_AXIS_LETTERS = {
    "t": "T",
    "time": "T",
    "c": "C",
    "ch": "C",
    "channel": "C",
    "channels": "C",
    "z": "Z",
    "y": "Y",
    "x": "X",
}

#: Units OME calls differently from pint's abbreviations, and unit names layers may carry.
_OME_UNITS = {"um": "µm", "μm": "µm", "micron": "µm", "microns": "µm", "micrometer": "µm"}

#: Unit of a physical size OME assumes when none is given; used for scaled layers without units.
DEFAULT_UNIT = "µm"


def ome_axes(meta: dict[str, Any], ndim: int) -> str:
    """OME axis letters (a subset of TCZYX) for a layer's ``ndim`` non-RGB dimensions.

    Known axis labels (``z``, ``c``, ``t``, …) are used; the last two axes are Y and X, and
    other unlabelled axes are taken, from the right, as Z, C and T.
    """
    labels = [str(a).lower() for a in (meta.get("axis_labels") or ())]
    letters = [_AXIS_LETTERS.get(label) for label in labels] if len(labels) == ndim else []
    if not letters:
        letters = [None] * ndim
    letters[-2:] = ["Y", "X"][-min(ndim, 2) :]
    free = [a for a in "ZCT" if a not in letters]
    for i in reversed(range(max(ndim - 2, 0))):
        if letters[i] is None:
            if not free:
                break
            letters[i] = free.pop(0)
    if None in letters or len(set(letters)) != ndim:
        raise OutputError(
            f"The layer has {ndim} axes ({', '.join(labels) or 'unlabelled'}) that do not map to "
            "OME-TIFF's T, C, Z, Y and X; save one image of at most 5 axes."
        )
    return "".join(letters)  # type: ignore[arg-type]


def unit_name(unit: Any) -> str | None:
    """An OME length unit for a layer's unit (a pint Unit or a string); None for pixels."""
    if unit is None:
        return None
    if isinstance(unit, str) and unit.strip() and unit.strip() not in _OME_UNITS:
        import pint

        with suppress(Exception):  # "nanometer" → nm, as OME spells it; else written as given
            unit = pint.get_application_registry().parse_expression(unit.strip()).units
    text = f"{unit:~}" if hasattr(unit, "dimensionality") else str(unit)
    text = text.strip()
    if not text or text in ("px", "pixel", "pixels"):
        return None
    return _OME_UNITS.get(text, text)


def physical_sizes(meta: dict[str, Any], axes: str) -> dict[str, Any]:
    """``PhysicalSize{X,Y,Z}`` and their units from the layer's scale and units.

    The unit is the layer's own (``units``), else a ``unit`` in its metadata; a scale other than
    1 with neither is taken as micrometres, OME's default length unit. Axes with scale 1 in pixel
    units get no physical size.
    """
    scale = list(meta.get("scale") or [1.0] * len(axes))
    units = meta.get("units")
    if units is None or isinstance(units, str) or not hasattr(units, "__len__"):
        units = [units] * len(axes)
    fallback = unit_name((meta.get("metadata") or {}).get("unit"))
    sizes: dict[str, Any] = {}
    for axis in "XYZ":
        if axis not in axes:
            continue
        i = axes.index(axis)
        size = float(scale[i]) if i < len(scale) else 1.0
        unit = unit_name(units[i]) if i < len(units) else None
        unit = unit or fallback
        if unit is None and size == 1.0:
            continue
        if size <= 0:
            continue
        sizes[f"PhysicalSize{axis}"] = size
        sizes[f"PhysicalSize{axis}Unit"] = unit or DEFAULT_UNIT
    return sizes


def write_ome_tiff(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """The npe2 single-layer writer: save one image layer as an OME-TIFF at ``path``."""
    if meta.get("multiscale"):
        data = data[0]  # the full-resolution level
    array = np.asarray(data)
    rgb = bool(meta.get("rgb", False))
    ndim = array.ndim - rgb
    if ndim < 2:
        raise OutputError("The layer holds no 2-D image; choose an image layer to save.")
    axes = ome_axes(meta, ndim)
    metadata: dict[str, Any] = {"axes": axes + ("S" if rgb else "")}
    metadata.update(physical_sizes(meta, axes))
    if meta.get("name"):
        metadata["Name"] = str(meta["name"])
    target = Path(path)
    check_format(target, array.dtype)
    try:
        with atomic_files([target], overwrite=True) as (temp,):  # napari asks first
            tifffile.imwrite(
                temp,
                array,
                ome=True,
                photometric="rgb" if rgb else "minisblack",
                metadata=metadata,
                software="napari-pdmfuse",
            )
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"Writing {target} failed ({reason}); free some space or choose another folder."
        ) from None
    return [str(target)]
