"""What an existing output says about itself: its shape, data type and the record written by
:meth:`~napari_pdmfuse.writing.meta.OutputMeta.record` (what the values are, how they were
made), read back from whichever format holds it.

A rerun reads it to tell an output this run would make again (left as it is) from one made
another way (refused), and a report reads it to describe outputs made by an earlier run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..ngff import is_zarr_name, multiscales
from .meta import ANNOTATION_NAMESPACE

#: ImageJ Properties written beside the record, and the record's names for them.
IMAGEJ_KEYS = {"Values": "values", "ValueUnit": "unit"}


@dataclass(frozen=True)
class Recorded:
    """An output as found on disk: ``shape`` in the output's axes (T C Y X, samples last),
    its data type and its record (empty when it holds none: not made by napari-pdmfuse)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    record: dict[str, str]


def read_recorded(path: Path) -> Recorded | None:
    """The shape, data type and record of the output at ``path``; None when it cannot be read
    as an image (a foreign or damaged file)."""
    try:
        return _zarr(path) if is_zarr_name(path) else _tiff(path)
    except Exception:
        return None


def read_pixels(path: Path, index: tuple[Any, ...]) -> np.ndarray:
    """``index`` (basic indexing, in the output's axes, samples last) of the full-resolution
    pixels of the output at ``path``, reading only what it selects."""
    import zarr

    if is_zarr_name(path):
        group, attrs = _group(path)
        pixels = group[_level0(attrs)]
        if not (attrs.get("pdmfuse") or {}).get("rgb"):
            return np.asarray(pixels[index])
        *lead, rows, cols, samples = index  # samples are stored before Y and X
        return np.moveaxis(np.asarray(pixels[(*lead, samples, rows, cols)]), -3, -1)
    import tifffile

    with tifffile.imread(path, aszarr=True, series=0, level=0) as store:
        return np.asarray(zarr.open(store, mode="r")[index])


def _group(path: Path) -> tuple[Any, dict[str, Any]]:
    import zarr

    group = zarr.open_group(str(path), mode="r")
    return group, dict(group.attrs)


def _level0(attrs: dict[str, Any]) -> str:
    images = multiscales(attrs)
    if images is None:
        raise ValueError("not an OME-Zarr image")
    return str(images[0]["datasets"][0]["path"])


def _zarr(path: Path) -> Recorded:
    group, attrs = _group(path)
    pixels = group[_level0(attrs)]
    found = attrs.get("pdmfuse") if isinstance(attrs.get("pdmfuse"), dict) else {}
    record = {k: str(v) for k, v in found.items() if k in ("values", "unit")}
    record |= {str(k): str(v) for k, v in (found.get("fusion") or {}).items()}
    shape = tuple(int(n) for n in pixels.shape)
    if found.get("rgb"):  # samples are stored as a channel axis before Y and X
        shape = (*shape[:-3], *shape[-2:], shape[-3])
    return Recorded(shape, np.dtype(pixels.dtype), record)


def _tiff(path: Path) -> Recorded:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        shape, dtype = tuple(int(n) for n in series.shape), np.dtype(series.dtype)
        if tif.is_imagej:
            properties = (tif.imagej_metadata or {}).get("Properties") or {}
            record = {IMAGEJ_KEYS.get(k, k): str(v) for k, v in properties.items() if k != "Name"}
        else:
            record = _annotation(tif.ome_metadata) if tif.is_ome else {}
    return Recorded(shape, dtype, record)


def _annotation(xml: str | None) -> dict[str, str]:
    """The key-value pairs of the OME MapAnnotation in napari-pdmfuse's namespace."""
    import tifffile

    if not xml:
        return {}
    annotations = tifffile.xml2dict(xml)["OME"].get("StructuredAnnotations") or {}
    maps = annotations.get("MapAnnotation") or []
    for annotation in maps if isinstance(maps, list) else [maps]:
        if annotation.get("Namespace") != ANNOTATION_NAMESPACE:
            continue
        pairs = annotation.get("Value", {}).get("M") or []
        pairs = pairs if isinstance(pairs, list) else [pairs]
        return {str(p["K"]): str(p.get("value", "")) for p in pairs}
    return {}
