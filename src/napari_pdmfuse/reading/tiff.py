"""TIFF, OME-TIFF and ImageJ hyperstacks: opened lazily, with their axes, sizes and names.

Nothing is decoded on opening: tiled, striped or compressed files are read through tifffile's
zarr store in blocks of the file's own chunks, uncompressed ones with positioned reads of just
the bytes a tile needs (:mod:`.filearray`), so a stack larger than memory can still be fused
tile by tile. The metadata come from OME-XML when the file has it, else from ImageJ's
description and the TIFF resolution tags.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile

from ..errors import InputError, PdmFuseError, ReadError
from .axes import file_axes, given_axes
from .filearray import FileArray
from .guarded import (
    GuardedArray,
    check_dtype,
    damaged,
    lazy,
    location,
    read_chunks,
    reopen_tiff_store,
    tifffile_messages,
    unreadable,
)
from .image import Image, stem
from .scale import Scale, checked, seconds, unit
from .scenes import SINGLE, Scene, checked_index, scenes_named, warn_first_only

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: The name tifffile gives an OME image it was given no name for ("Image0"): no name at all.
_PLACEHOLDER_NAME = re.compile(r"Image:?\d*")


def is_tiff(path: Path) -> bool:
    """Whether ``path`` starts like a TIFF/BigTIFF, whatever its name says."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) in TIFF_MAGIC
    except OSError as exc:
        raise ReadError(f"Cannot open {path} ({exc.strerror}); check its permissions.") from None


@dataclass(frozen=True)
class Opened:
    """The first series of a TIFF, opened lazily with length-one axes squeezed out.

    ``axes`` are tifffile's letters; ``full_shape`` and ``full_axes`` are the series before
    squeezing; ``damaged`` says tifffile had to skip broken tags or pages to open the file.
    """

    data: da.Array
    axes: str
    scale: Scale
    n_series: int
    damaged: bool
    full_shape: tuple[int, ...]
    full_axes: str
    channel_names: tuple[str, ...] | None = None
    name: str | None = None


def tiff_scenes(path: Path) -> tuple[Scene, ...]:
    """The images of a multi-series OME-TIFF as scenes; one scene for any other TIFF (whose
    further series are not images of their own, e.g. pages of another size)."""
    try:
        with tifffile_messages(), tifffile.TiffFile(path) as tif:
            if not tif.is_ome or len(tif.series) < 2:
                return SINGLE
            names = [_ome_name(_ome_image(tif, index)) for index in range(len(tif.series))]
    except Exception:
        raise unreadable(path) from None
    return scenes_named(names)


def open_tiff(path: Path, planes_together: bool = False, series: int = 0) -> Opened:
    """Open a series of a TIFF (an OME-TIFF's image) lazily, with its scale, channel names and
    OME name.

    Uncompressed contiguous data (what ImageJ writes) would be one chunk per plane in
    tifffile's zarr store, so every tile of the fusion would decode whole planes; they are
    read with positioned reads instead (:class:`.filearray.FileArray`), only the rows and
    columns a tile needs.
    ``planes_together`` groups the focal planes in chunks, for fusing (see
    :func:`.guarded.read_chunks`).
    """
    try:
        with tifffile_messages() as messages, tifffile.TiffFile(path) as tif:
            index = series
            series = tif.series[index]
            axes = series.get_axes(True)
            full_axes = series.get_axes(False)
            if _planes_saved_as_samples(tif):
                axes, full_axes = axes.replace("S", "Q"), full_axes.replace("S", "Q")
            full_shape = tuple(int(n) for n in series.get_shape(False))
            ome = _ome_image(tif, index)
            pixels = _ome_pixels(ome)
            scale = _tiff_scale(tif, pixels)
            n_series = 1 if tif.is_ome else len(tif.series)  # OME series are images of their own
            names = _channel_names(tif, pixels, full_axes, full_shape)
            name = _ome_name(ome)
            if series.dataoffset is not None and not series.is_multifile:
                array: Any = FileArray(
                    path,
                    np.dtype(tif.byteorder + series.dtype.char),
                    series.dataoffset,
                    series.get_shape(True),
                )
                chunks: Any = read_chunks(
                    (1,) * array.ndim, axes, array.shape, array.dtype.itemsize, planes_together
                )
            else:
                import zarr  # a fifth of a second to import: not for uncompressed files

                store = tif.aszarr(series=index, level=0, squeeze=True)
                array = zarr.open(store, mode="r")
                chunks = (
                    read_chunks(
                        array.chunks, axes, array.shape, array.dtype.itemsize, planes_together
                    )
                    if isinstance(array, zarr.Array)
                    else None
                )
    except PdmFuseError:
        raise
    except Exception:
        raise unreadable(path) from None
    if chunks is None or len(array.shape) != len(axes):
        raise unreadable(path)
    if 0 in array.shape:
        raise unreadable(path)  # no valid TIFF has an empty axis
    check_dtype(path, np.dtype(array.dtype))
    # A later image of an OME-TIFF, stored compressed, is opened again as that image.
    store = not isinstance(array, FileArray) and index
    reopen = (reopen_tiff_store, (Path(location(path)), path, index)) if store else None
    return Opened(
        data=lazy(GuardedArray(array, path, reopen=reopen), chunks),
        axes=axes,
        scale=checked(scale, path),
        n_series=n_series,
        damaged=bool(messages),
        full_shape=full_shape,
        full_axes=full_axes,
        channel_names=names,
        name=name,
    )


def read_tiff(
    path: Path, axes: str | None = None, planes_together: bool = True, scene: int | None = None
) -> Image:
    """A TIFF with all its axes (time points, focal planes, channels), as the file or ``axes``
    names them; of a multi-series OME-TIFF, the image ``scene`` (the first when None, with a
    warning). A damaged file that still opens is read with a warning."""
    scenes = tiff_scenes(path)
    if scene is None:
        warn_first_only(path, scenes)
    chosen = scenes[0] if scene is None else checked_index(path, scenes, scene)
    opened = open_tiff(path, planes_together, chosen.index)
    try:
        if axes is None:
            data, letters = file_axes(opened.data, opened.axes, path, opened.n_series)
        else:
            data, letters = given_axes(opened.data, opened.full_axes, opened.full_shape, path, axes)
        names = opened.channel_names
        if names is not None and ("C" not in letters or len(names) != _length(data, letters)):
            names = None  # e.g. --axes named another axis C
        image = Image(
            data=data,
            axes=letters,
            sources=(path,),
            name=opened.name or stem(path),
            z_spacing=opened.scale.z_spacing,
            pixel_size=opened.scale.pixel_size,
            unit=opened.scale.unit,
            channel_names=names,
            time_interval=opened.scale.time_interval,
        )
    except InputError:
        if opened.damaged:  # e.g. a truncated file that lost its last pages: say so
            raise unreadable(path) from None
        raise
    if opened.damaged:
        warnings.warn(damaged(path), stacklevel=3)
    return image


def _planes_saved_as_samples(tif: tifffile.TiffFile) -> bool:
    """Whether the file is a plain ``tifffile.imwrite(path, stack)`` of 3 or 4 planes.

    tifffile stores an unlabelled (3, Y, X) or (4, Y, X) array as one page of 3 or 4 colour
    samples, one plane after the other, and records the array's shape, without axes, in its
    description: the planes of the array, not the colours of one picture (which, saved as
    (Y, X, 3), is recorded with its samples last). A file that names its axes is taken at
    its word; one RGB picture saved this way is told apart only by ``--axes SYX``.
    """
    if not tif.is_shaped or len(tif.pages) != 1:
        return False
    recorded = tif.shaped_metadata[0] if tif.shaped_metadata else {}
    series = tif.series[0]
    return (
        "axes" not in recorded
        and list(recorded.get("shape", ())) == list(series.get_shape(False))
        and series.get_axes(False) == "SYX"
        and series.get_shape(False)[0] in (3, 4)
    )


def _length(data: Any, axes: str) -> int:
    """Length of the C axis of ``data`` (whose axes are ``axes``, C among them)."""
    return int(data.shape[axes.upper().index("C")])


def _ome_image(tif: tifffile.TiffFile, index: int = 0) -> dict[str, Any] | None:
    """The ``index``-th Image element of the file's OME-XML, as a dict, or None."""
    if not (tif.is_ome and tif.ome_metadata):
        return None
    try:
        image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
        image = image[index] if isinstance(image, list) else image
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return image if isinstance(image, dict) else None


def _ome_pixels(image: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Pixels element of an OME Image, as a dict, or None."""
    pixels = None if image is None else image.get("Pixels")
    return pixels if isinstance(pixels, dict) else None


def _ome_name(image: dict[str, Any] | None) -> str | None:
    """The OME Image Name, unless absent or tifffile's placeholder."""
    name = None if image is None else image.get("Name")
    if not isinstance(name, str) or not name.strip() or _PLACEHOLDER_NAME.fullmatch(name):
        return None
    return name.strip()


def _channel_names(
    tif: tifffile.TiffFile, pixels: dict[str, Any] | None, axes: str, shape: tuple[int, ...]
) -> tuple[str, ...] | None:
    """Channel names from OME (``Channel/@Name``) or ImageJ (slice labels that are the same for
    every plane of a channel), one per channel of the C axis; None when the file has none."""
    if "C" not in axes:
        return None
    n_channels = shape[axes.index("C")]
    names: list[object] = []
    try:
        if pixels is not None:
            channels = pixels.get("Channel")
            channels = channels if isinstance(channels, list) else [channels]
            names = [c.get("Name") if isinstance(c, dict) else None for c in channels]
        elif tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            planes = [n for a, n in zip(axes, shape, strict=True) if a not in "YXS"]
            if isinstance(labels, list) and len(labels) == int(np.prod(planes)):
                grid = np.array(labels, dtype=object).reshape(planes)
                grid = np.moveaxis(grid, [a for a in axes if a not in "YXS"].index("C"), -1)
                per_channel = grid.reshape(-1, n_channels)
                if (per_channel == per_channel[0]).all():
                    names = list(per_channel[0])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    if len(names) != n_channels or not all(isinstance(n, str) and n.strip() for n in names):
        return None
    return tuple(str(n) for n in names)


def _tiff_scale(tif: tifffile.TiffFile, pixels: dict[str, Any] | None) -> Scale:
    """Physical sizes from OME Pixels, else from ImageJ's description and resolution tags."""
    if pixels is not None:
        scale = _ome_scale(pixels)
        if scale is not None:
            return scale
    tags = tif.pages.first.tags
    pixel: tuple[float, float] | None = None
    unit_name: str | None = None
    factor = 1.0
    meta = tif.imagej_metadata or {}
    if tif.is_imagej:
        unit_name, factor = unit(meta.get("unit"))
    else:
        # Inches (the TIFF default) mean a desktop image's dots per inch, not a microscope's scale.
        resunit = tags.valueof("ResolutionUnit")
        unit_name, factor = {3: ("um", 1e4), 4: ("um", 1e3), 5: ("um", 1.0)}.get(
            int(resunit or 0), (None, 1.0)
        )
    xres, yres = tags.valueof("XResolution"), tags.valueof("YResolution")
    if unit_name is not None and xres and yres:
        px, py = (_ratio(r) for r in (xres, yres))
        if px is not None and py is not None:
            pixel = (_size(factor, py), _size(factor, px))
    spacing = meta.get("spacing")
    z_spacing = float(spacing) * factor if isinstance(spacing, (int, float)) else None
    if pixel is None and z_spacing is None:
        unit_name = None
    if pixels is not None:
        interval = _ome_interval(pixels)
    else:
        interval = seconds(meta.get("finterval"), meta.get("tunit", "sec"))
    return Scale(z_spacing=z_spacing, pixel_size=pixel, unit=unit_name, time_interval=interval)


def _size(factor: float, resolution: float) -> float:
    """A pixel's size from a resolution (pixels per unit): infinite for a resolution of 0."""
    return factor / resolution if resolution else float("inf")


def _ratio(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return float(value) if isinstance(value, (int, float)) else None


def _ome_scale(pixels: dict[str, Any]) -> Scale | None:
    """Physical sizes (and the time step) from OME Pixels, or None if it gives no size."""

    def size(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return None
        _, factor = unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        return float(value) * factor

    x, y, z = size("X"), size("Y"), size("Z")
    pixel = (y, x) if x is not None and y is not None else None
    if pixel is None and z is None:
        return None
    return Scale(z_spacing=z, pixel_size=pixel, unit="um", time_interval=_ome_interval(pixels))


def _ome_interval(pixels: dict[str, Any]) -> float | None:
    return seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))
