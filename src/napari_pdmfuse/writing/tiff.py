"""Plain ``.tif`` outputs: ImageJ hyperstacks where ImageJ can open them, else OME-TIFFs.

tifffile lays out an uncompressed file (header, tags, one contiguous block of pixels, every
time point and channel a page); tiles then go straight to their byte offsets with positioned
writes. Unlike a memory map, written pages never count toward this process's resident memory,
so streaming a result larger than memory keeps the process small.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fsops import write_at
from .meta import (
    CLASSIC_TIFF_BYTES,
    IMAGEJ_DTYPES,
    OME_DTYPES,
    OutputMeta,
    check_axes,
    imagej_metadata,
    imagej_resolution,
    json_metadata,
    ome_metadata,
    software,
    tiff_resolution,
)


def imagej_can_open(axes: str, shape: Sequence[int], dtype: np.dtype) -> bool:
    """Whether ImageJ opens the image as a hyperstack: 8/16-bit or float32 planes, or 8-bit
    RGB, in a classic (under 4 GiB) TIFF."""
    dtype = np.dtype(dtype)
    small = int(np.prod(shape)) * dtype.itemsize < CLASSIC_TIFF_BYTES
    if "S" in axes:
        return small and dtype == np.uint8 and shape[-1] == 3
    return small and dtype in IMAGEJ_DTYPES


def tiff_options(
    axes: str, shape: Sequence[int], dtype: np.dtype, meta: OutputMeta
) -> dict[str, object]:
    """``tifffile`` keywords for a plain TIFF: an ImageJ hyperstack (the output axes are already
    in ImageJ's T C Y X S order) or, when ImageJ cannot open it, an OME-TIFF, BigTIFF if large;
    pixel types OME-XML has no name for (64-bit integers, 16-bit floats) get tifffile's JSON
    description instead, which keeps the axes and the metadata as well."""
    rgb = "S" in axes
    options: dict[str, object] = {
        "software": software(),
        "photometric": "rgb" if rgb else "minisblack",
    }
    if rgb and shape[-1] == 4:
        options["extrasamples"] = ("unassalpha",)
    if imagej_can_open(axes, shape, dtype):
        metadata = imagej_metadata(axes, shape, meta)
        return {"imagej": True, "metadata": metadata, **imagej_resolution(meta), **options}
    big = int(np.prod(shape)) * np.dtype(dtype).itemsize >= CLASSIC_TIFF_BYTES
    if np.dtype(dtype) in OME_DTYPES:
        metadata = ome_metadata(axes, shape, meta)
        return {"ome": True, "bigtiff": big, "metadata": metadata, **options}
    metadata = json_metadata(axes, meta)
    options |= tiff_resolution(meta)
    return {"ome": False, "imagej": False, "bigtiff": big, "metadata": metadata, **options}


class TiffPixels:
    """The pixels of a new uncompressed TIFF, written in place with positioned writes."""

    def __init__(
        self, path: Path, axes: str, shape: tuple[int, ...], dtype: np.dtype, meta: OutputMeta
    ) -> None:
        import tifffile

        check_axes(axes, shape)
        options = tiff_options(axes, shape, dtype, meta)
        layout = tifffile.memmap(path, shape=shape, dtype=dtype, **options)
        self.offset, self.shape, self.dtype = int(layout.offset), layout.shape, layout.dtype
        del layout
        self.strides = np.cumprod((1, *self.shape[:0:-1]))[::-1] * self.dtype.itemsize
        self.rgb = "S" in axes
        self.fd: int | None = os.open(path, os.O_RDWR)

    def write(self, lead: tuple[int, ...], y: int, x: int, values: np.ndarray) -> None:
        """A tile (h, w) or (h, w, S) at [*lead, y:y+h, x:x+w]."""
        if self.fd is None:
            raise ValueError("the TIFF is closed")
        values = np.ascontiguousarray(values, dtype=self.dtype)
        starts = (*lead, y, x, *((0,) if self.rgb else ()))
        lead_axes = len(lead)
        # Trailing axes the tile spans completely merge into one contiguous run per write.
        axis = values.ndim - 1
        while axis > 0 and values.shape[axis] == self.shape[lead_axes + axis]:
            axis -= 1
        first = lead_axes + axis + 1  # axes before the contiguous run: one offset
        base = self.offset + int(np.dot(starts[:first], self.strides[:first]))
        strides = self.strides[lead_axes : lead_axes + axis]
        for index in np.ndindex(*values.shape[:axis]):
            position = base + int(np.dot(index, strides))
            write_at(self.fd, memoryview(values[index]), position)

    def finish(self) -> None:
        """Nothing left to add: the layout was complete from the start."""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
