"""Focal planes saved one per file: a folder of planes, or a list of plane files.

Each plane is opened lazily (TIFFs through :mod:`.tiff`, other formats through one delayed read
per plane), and all must have one size and data type, so a mismatch is refused on opening with
both files named rather than found half-way through a fusion.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np

from ..errors import InputError, ReadError
from .axes import normalise_axes, squeeze
from .guarded import check_dtype, damaged, unreadable
from .image import Image
from .scale import Scale
from .tiff import is_tiff, open_tiff

#: File name suffixes taken as focal planes when the input is a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def natural_key(name: str) -> list[Any]:
    """Sort key that puts z2 before z10, as microscope software numbers planes."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def folder_images(folder: Path) -> list[Path]:
    """The plane files of ``folder`` (hidden files and other files left out), in natural order."""
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ReadError(
            f"Cannot list folder {folder} ({exc.strerror}); check its permissions."
        ) from None
    images = [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not images:
        raise InputError(
            f"The folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)}); point to the "
            "folder that holds the focal planes."
        )
    return sorted(images, key=lambda p: natural_key(p.name))


def read_planes(paths: list[Path], axes: str | None = None, folder: Path | None = None) -> Image:
    """One plane per file, stacked along Z in the order given: (Z, Y, X), with colour samples
    (S) or, for other sample counts such as grey + alpha, channels (C) last; ``axes`` names the
    stacked array's axes instead. The first plane's pixel size is the image's; the image is
    named after ``folder``, the folder the planes came from, else the first plane's folder."""
    planes = []
    first: tuple[Path, da.Array, Scale] | None = None
    for path in paths:
        plane, scale = _read_plane(path)
        if first is None:
            first = (path, plane, scale)
        elif plane.shape != first[1].shape or plane.dtype != first[1].dtype:
            raise InputError(
                f"{path} is {_describe(plane)} but {first[0]} is {_describe(first[1])}; every "
                "focal plane must have the same size and type."
            )
        planes.append(plane)
    assert first is not None
    if len(planes) < 2:
        raise InputError(
            f"{first[0]} is a single 2-D image, not a stack; give a multi-page TIFF, a folder of "
            "planes or at least two plane files."
        )
    data = da.stack(planes)
    if axes is not None:
        letters = normalise_axes(axes, data.shape, str(folder or paths[0]))
    elif data.ndim == 4:
        letters = "ZYXS" if data.shape[-1] in (3, 4) else "ZYXC"
    else:
        letters = "ZYX"
    scale = first[2]
    return Image(
        data=data,
        axes=letters,
        sources=tuple(paths),
        name=(folder or paths[0].parent).resolve().name or None,
        pixel_size=scale.pixel_size,
        unit=scale.unit if scale.pixel_size else None,
    )


def _read_plane(path: Path) -> tuple[da.Array, Scale]:
    """Open one plane file lazily; a TIFF must hold exactly one (grey or RGB) plane."""
    if is_tiff(path):
        opened = open_tiff(path)
        data, axes = squeeze(opened.data, opened.axes)
        if axes not in ("YX", "YXS"):
            if opened.damaged:
                raise unreadable(path)
            raise InputError(
                f"{path} holds a stack of shape {data.shape}, not one plane; give it on its own "
                "or export its planes as separate files."
            )
        if opened.damaged:
            warnings.warn(damaged(path), stacklevel=4)
        return data, opened.scale
    try:
        import imageio.v3 as iio

        props = iio.improps(path, plugin="pillow")
    except Exception:
        raise unreadable(path) from None
    if props.is_batch or len(props.shape) not in (2, 3):
        raise InputError(
            f"{path} holds several images (shape {props.shape}), not one plane; export each "
            "focal plane as its own file."
        )
    check_dtype(path, np.dtype(props.dtype))
    plane = dask.delayed(_decode)(path, props.shape, props.dtype)
    return da.from_delayed(plane, shape=props.shape, dtype=props.dtype), Scale()


def _decode(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imageio.v3 as iio

    try:
        plane = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception:
        raise unreadable(path) from None
    if plane.shape != tuple(shape) or plane.dtype != dtype:
        raise ReadError(f"{path} changed while it was being read; fuse it again.")
    return plane


def _describe(plane: da.Array) -> str:
    size = "×".join(str(n) for n in plane.shape)
    return f"{size} {plane.dtype}"
