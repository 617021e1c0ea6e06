"""Writing results: streamed tile by tile into OME-Zarr stores, tiled pyramidal OME-TIFFs and
ImageJ hyperstacks (:func:`open_output`), or whole arrays at once (:func:`write_outputs`).

Every output is written under a temporary name and moved into place only when complete (see
:mod:`.atomic`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tifffile

from ..fusion import FusionResult
from ..sizes import MAP_BYTES, check_disk
from ..stack import Stack
from .atomic import (
    atomic_files,
    check_outputs,
    output_name,
    temp_name,
    write_failed,
)
from .filesink import FileSink, open_pixels
from .meta import CLASSIC_TIFF_BYTES, IMAGEJ_DTYPES, NO_SCALE, OutputMeta, Pixels, Scale
from .output import open_output

__all__ = [
    "CLASSIC_TIFF_BYTES",
    "IMAGEJ_DTYPES",
    "FileSink",
    "OutputMeta",
    "Pixels",
    "Scale",
    "atomic_files",
    "check_outputs",
    "check_space",
    "hyperstack_layout",
    "open_output",
    "open_pixels",
    "output_name",
    "output_sizes",
    "temp_name",
    "tiff_layout",
    "write_failed",
    "write_hyperstack",
    "write_outputs",
    "write_tiff",
]


def tiff_layout(
    shape: tuple[int, ...], dtype: np.dtype, *, rgb: bool = False, scale: Scale = NO_SCALE
) -> tuple[tuple[int, ...], dict[str, object]]:
    """Shape on disk and ``tifffile.imwrite`` keywords for a (Y, X[, C]) image.

    Grey and channels are written as an ImageJ-readable (C, Y, X) TIFF whenever ImageJ can open
    the result (8/16-bit or float32, 8-bit RGB, under 4 GiB); other types as plain TIFFs, BigTIFF
    when large, with the same resolution tags.
    """
    from .. import __version__

    dtype = np.dtype(dtype)
    samples = shape[-1] if len(shape) == 3 else 1
    small = int(np.prod(shape)) * dtype.itemsize < CLASSIC_TIFF_BYTES
    kwargs: dict[str, object] = {"software": f"napari-pdmfuse {__version__}"}
    if rgb:
        kwargs["photometric"] = "rgb"
        if samples == 4:
            kwargs["extrasamples"] = ("unassalpha",)
        axes = "YXS"
        imagej = dtype == np.uint8 and samples == 3 and small
    else:
        kwargs["photometric"] = "minisblack"
        if len(shape) == 3:
            shape = (shape[2], shape[0], shape[1])
        axes = "CYX" if len(shape) == 3 else "YX"
        imagej = dtype in IMAGEJ_DTYPES and small
    metadata: dict[str, object] = {"axes": axes}
    if scale.pixel_size is not None and scale.unit:
        py, px = scale.pixel_size
        if imagej:
            kwargs["resolution"] = (1 / px, 1 / py)
            metadata["unit"] = scale.unit
        elif scale.unit == "um":
            kwargs["resolution"] = (1e4 / px, 1e4 / py)
            kwargs["resolutionunit"] = "CENTIMETER"
    return shape, {"imagej": imagej, "metadata": metadata, **kwargs}


def write_tiff(path: Path, data: np.ndarray, *, rgb: bool = False, scale: Scale = NO_SCALE) -> None:
    """Write one 2-D image (grey, RGB(A) or (Y, X, C) channels) as a TIFF; see tiff_layout."""
    data = np.asarray(data)
    _, kwargs = tiff_layout(data.shape, data.dtype, rgb=rgb, scale=scale)
    if data.ndim == 3 and not rgb:
        data = np.moveaxis(data, -1, 0)
    tifffile.imwrite(path, data, **kwargs)


def write_outputs(
    result: FusionResult,
    fused: str | Path,
    *,
    focus_map: str | Path | None = None,
    confidence: str | Path | None = None,
    rgb: bool | None = None,
    scale: Scale = NO_SCALE,
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Write the fused image (input dtype) and, if asked, the float32 focus and confidence maps.

    All files appear together or not at all. ``rgb`` says whether a trailing axis of length 3
    or 4 is colour (the default guesses so) rather than separate channels.
    """
    paths = check_outputs([fused, focus_map, confidence], inputs, overwrite=overwrite)
    image = np.asarray(result.fused)
    if rgb is None:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    arrays: list[tuple[np.ndarray, bool]] = [(image, rgb)]
    if focus_map is not None:
        arrays.append((np.asarray(result.focus_map, dtype=np.float32), False))
    if confidence is not None:
        arrays.append((np.asarray(result.confidence, dtype=np.float32), False))
    try:
        with atomic_files(paths) as temps:
            for temp, (data, is_rgb) in zip(temps, arrays, strict=True):
                write_tiff(temp, data, rgb=is_rgb, scale=scale)
    except OSError as exc:
        raise write_failed(paths[0].parent, exc) from None
    return paths


def output_sizes(stack: Stack, *, focus_map: bool, confidence: bool) -> list[int]:
    """Bytes of each output file's pixels: fused image, then the maps asked for."""
    pixels = stack.shape_yx[0] * stack.shape_yx[1]
    sizes = [pixels * stack.n_channels * stack.dtype.itemsize]
    sizes += [pixels * MAP_BYTES] * (int(focus_map) + int(confidence))
    return sizes


def check_space(stack: Stack, paths: Sequence[Path], *, focus_map: bool, confidence: bool) -> None:
    """Refuse outputs (``paths``: fused, then the maps asked for) that would not fit on disk."""
    sizes = output_sizes(stack, focus_map=focus_map, confidence=confidence)
    check_disk(list(zip(paths, sizes, strict=True)))


# ---------------------------------------------------------------------------------------------
# Hyperstacks: time points and channels kept


#: Axis order of an ImageJ hyperstack.
IMAGEJ_ORDER = "TZCYXS"


def hyperstack_layout(
    data: np.ndarray,
    axes: str,
    *,
    scale: Scale = NO_SCALE,
    channel_names: Sequence[str] | None = None,
    ome: bool = False,
) -> tuple[np.ndarray, dict[str, object]]:
    """The array as written and ``tifffile.imwrite`` keywords for an image with named axes.

    ``axes`` (e.g. "TCYX", "TYXS") says what each axis of ``data`` holds. The file is an ImageJ
    hyperstack (axes put in ImageJ's TCYX order, pixel size and unit, channel names as slice
    labels, frame interval) when ImageJ can open it (8/16-bit or float32, 8-bit RGB, under
    4 GiB), and an OME-TIFF (axes in the given order, PhysicalSizeX/Y, TimeIncrement, channel
    names) when it cannot or when ``ome`` is asked for.
    """
    from .. import __version__

    data = np.asarray(data)
    if len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not fit an array of shape {data.shape}")
    rgb = "S" in axes
    dtype = data.dtype
    small = data.nbytes < CLASSIC_TIFF_BYTES
    imagej_type = dtype == np.uint8 if rgb else dtype in IMAGEJ_DTYPES
    imagej = not ome and imagej_type and small and (not rgb or data.shape[-1] == 3)
    n_channels = data.shape[axes.index("C")] if "C" in axes else 0
    names = list(channel_names) if channel_names is not None and n_channels else None
    if names is not None and len(names) != n_channels:
        names = None
    kwargs: dict[str, object] = {
        "software": f"napari-pdmfuse {__version__}",
        "photometric": "rgb" if rgb else "minisblack",
    }
    if rgb and data.shape[-1] == 4:
        kwargs["extrasamples"] = ("unassalpha",)
    if imagej:
        letters = "".join(a for a in IMAGEJ_ORDER if a in axes)
        data = data.transpose([axes.index(a) for a in letters])
        metadata: dict[str, object] = {"axes": letters}
        if names is not None:
            planes = [n for a, n in zip(letters, data.shape, strict=True) if a not in "YXS"]
            # One label per page; ImageJ's pages run through C fastest, then Z, then T.
            metadata["Labels"] = [names[i % n_channels] for i in range(int(np.prod(planes)))]
        if scale.pixel_size is not None and scale.unit:
            py, px = scale.pixel_size
            kwargs["resolution"] = (1 / px, 1 / py)
            metadata["unit"] = scale.unit
        if scale.time_interval and "T" in axes:
            metadata.update(finterval=scale.time_interval, tunit="sec")
        return data, {"imagej": True, "metadata": metadata, **kwargs}
    metadata = {"axes": axes}
    if scale.pixel_size is not None and scale.unit == "um":
        py, px = scale.pixel_size
        metadata.update(
            PhysicalSizeX=px, PhysicalSizeXUnit="µm", PhysicalSizeY=py, PhysicalSizeYUnit="µm"
        )
    if scale.time_interval and "T" in axes:
        metadata.update(TimeIncrement=scale.time_interval, TimeIncrementUnit="s")
    if names is not None:
        metadata["Channel"] = {"Name": names}
    return data, {"ome": True, "bigtiff": not small, "metadata": metadata, **kwargs}


def write_hyperstack(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    scale: Scale = NO_SCALE,
    channel_names: Sequence[str] | None = None,
    ome: bool = False,
) -> None:
    """Write an image with named axes (time points, channels) as ImageJ or OME-TIFF; see
    :func:`hyperstack_layout`."""
    array, kwargs = hyperstack_layout(data, axes, scale=scale, channel_names=channel_names, ome=ome)
    tifffile.imwrite(path, array, **kwargs)
