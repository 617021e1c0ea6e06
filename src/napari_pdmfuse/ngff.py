"""Reading OME-NGFF metadata: which names and folders are zarr stores, and the multiscales,
axes and coordinate transformations of OME-Zarr 0.4 and 0.5 images.

The writer of OME-Zarr outputs is :mod:`napari_pdmfuse.writing.omezarr`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: Names written as OME-Zarr; any other output name is a TIFF.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")

#: Files that mark a folder as a zarr store (format 2 group or array, format 3 node).
ZARR_MARKERS = (".zgroup", ".zarray", "zarr.json")


def multiscales(attrs: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The ``multiscales`` list of OME-NGFF 0.4 (top level) or 0.5 (under ``ome``)."""
    found = attrs.get("multiscales")
    if found is None and isinstance(attrs.get("ome"), dict):
        found = attrs["ome"].get("multiscales")
    return found if isinstance(found, list) and found else None


def transforms(items: Any, ndim: int) -> tuple[list[float], list[float]]:
    """Scale and translation of an OME-NGFF ``coordinateTransformations`` list."""
    scale, translate = [1.0] * ndim, [0.0] * ndim
    for transform in items or []:
        kind = transform.get("type")
        values = transform.get("scale" if kind == "scale" else "translation")
        if not isinstance(values, list) or len(values) != ndim:
            continue
        if kind == "scale":
            scale = [a * float(b) for a, b in zip(scale, values, strict=True)]
        elif kind == "translation":
            translate = [a + float(b) for a, b in zip(translate, values, strict=True)]
    return scale, translate


def is_zarr_name(path: Path) -> bool:
    return path.name.lower().endswith(ZARR_SUFFIXES)


def is_zarr_store(path: Path) -> bool:
    """Whether ``path`` is a folder holding a zarr store (the only folders ever replaced)."""
    return path.is_dir() and any((path / marker).is_file() for marker in ZARR_MARKERS)
