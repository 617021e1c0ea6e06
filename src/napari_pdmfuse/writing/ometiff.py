"""Tiled, pyramidal OME-TIFF outputs (``.ome.tif``), streamed with bounded memory.

Tiles arrive in whatever order fusion makes them, but a TIFF is written page by page, tile row
by tile row; so the result first goes into a scratch OME-Zarr store beside the output (which
also builds the pyramid, one chunk at a time), and tifffile then writes the OME-TIFF from it,
one 512² tile at a time, every time point and channel a page, with the coarser levels as
SubIFDs that QuPath, napari and Bio-Formats read as a pyramid. The scratch store is removed
afterwards; a killed run's is cleaned like any other temporary file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .meta import CLASSIC_TIFF_BYTES, OutputMeta, ome_metadata, software
from .omezarr import CHUNK, ZarrPixels

OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff")


def is_ome_tiff_name(path: Path) -> bool:
    return path.name.lower().endswith(OME_TIFF_SUFFIXES)


def _tiles(level: object, pages: tuple[int, ...], rgb: bool) -> Iterator[np.ndarray]:
    """A stored level's tiles in TIFF order (page, tile row, tile column), edge tiles
    zero-padded; colour samples (stored as a channel axis) go back last."""
    height, width = level.shape[-2:]  # type: ignore[attr-defined]
    for page in np.ndindex(*pages):
        for y in range(0, height, CHUNK):
            for x in range(0, width, CHUNK):
                rows, cols = slice(y, y + CHUNK), slice(x, x + CHUNK)
                if rgb:
                    block = np.moveaxis(level[(*page, slice(None), rows, cols)], 0, -1)  # type: ignore[index]
                else:
                    block = level[(*page, rows, cols)]  # type: ignore[index]
                pad = [(0, CHUNK - block.shape[0]), (0, CHUNK - block.shape[1])]
                yield np.pad(block, pad + [(0, 0)] * (block.ndim - 2))


class OmeTiffPixels:
    """One image written as a tiled, pyramidal OME-TIFF through a scratch OME-Zarr store."""

    def __init__(
        self,
        path: Path,
        scratch: Path,
        axes: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        meta: OutputMeta,
    ) -> None:
        self.path, self.scratch, self.axes, self.shape, self.meta = path, scratch, axes, shape, meta
        scratch.mkdir()
        self.store = ZarrPixels(scratch, axes, shape, dtype, OutputMeta())

    def write(self, lead: tuple[int, ...], y: int, x: int, values: np.ndarray) -> None:
        self.store.write(lead, y, x, values)

    def finish(self) -> None:
        import tifffile

        self.store.finish()
        levels, dtype = self.store.levels, self.store.dtype
        rgb = "S" in self.axes
        pages = tuple(self.shape[: self.axes.index("Y")])
        samples = self.shape[-1:] if rgb else ()
        common: dict[str, object] = {
            "tile": (CHUNK, CHUNK),
            "dtype": dtype,
            "photometric": "rgb" if rgb else "minisblack",
        }
        if rgb and self.shape[-1] == 4:
            common["extrasamples"] = ("unassalpha",)
        # A pyramid adds a third to the pixels; beyond 4 GiB the file must be a BigTIFF.
        big = int(np.prod(self.shape)) * dtype.itemsize * 4 // 3 >= CLASSIC_TIFF_BYTES
        with tifffile.TiffWriter(self.path, bigtiff=big, ome=True) as tif:
            tif.write(
                _tiles(levels[0], pages, rgb),
                shape=self.shape,
                subifds=len(levels) - 1,
                metadata=ome_metadata(self.axes, self.shape, self.meta),
                software=software(),
                **common,
            )
            for level in levels[1:]:
                shape = (*pages, *level.shape[-2:], *samples)
                tif.write(_tiles(level, pages, rgb), shape=shape, subfiletype=1, **common)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
