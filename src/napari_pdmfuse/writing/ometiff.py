"""Tiled, pyramidal OME-TIFF outputs (``.ome.tif``), streamed with bounded memory.

Tiles arrive in whatever order fusion makes them, but a TIFF is written tile row by tile row;
so the result first goes into a scratch OME-Zarr store beside the output (which also builds the
pyramid, one chunk at a time), and tifffile then writes the OME-TIFF from it, one 512² tile at
a time, with the coarser levels as SubIFDs that QuPath, napari and Bio-Formats read as a
pyramid. The scratch store is removed afterwards; a killed run's is cleaned like any other
temporary file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..ngff import CHUNK, ZarrPixels

OME_TIFF_SUFFIXES = (".ome.tif", ".ome.tiff")


def is_ome_tiff_name(path: Path) -> bool:
    return path.name.lower().endswith(OME_TIFF_SUFFIXES)


def _tiles(level: object, rgb: bool) -> Iterator[np.ndarray]:
    """A level's tiles in TIFF order (plane, tile row, tile column), edge tiles zero-padded."""
    shape = level.shape  # type: ignore[attr-defined]
    height, width = shape[-2:]
    planes = [()] if len(shape) == 2 or rgb else [(c,) for c in range(shape[0])]
    for plane in planes:
        for y in range(0, height, CHUNK):
            for x in range(0, width, CHUNK):
                if rgb:
                    block = np.moveaxis(level[:, y : y + CHUNK, x : x + CHUNK], 0, -1)  # type: ignore[index]
                else:
                    block = level[(*plane, slice(y, y + CHUNK), slice(x, x + CHUNK))]  # type: ignore[index]
                pad = [(0, CHUNK - block.shape[0]), (0, CHUNK - block.shape[1])]
                yield np.pad(block, pad + [(0, 0)] * (block.ndim - 2))


class OmeTiffPixels:
    """One image written as a tiled, pyramidal OME-TIFF through a scratch OME-Zarr store."""

    def __init__(
        self,
        path: Path,
        scratch: Path,
        shape_yx: tuple[int, int],
        channels: int | None,
        dtype: np.dtype,
        *,
        rgb: bool = False,
        pixel_size: tuple[float, float] | None = None,
    ) -> None:
        scratch.mkdir()
        self.path, self.scratch, self.rgb, self.pixel_size = path, scratch, rgb, pixel_size
        self.store = ZarrPixels(scratch, shape_yx, channels, dtype, pixel_size=pixel_size)

    def write(self, y: int, x: int, values: np.ndarray) -> None:
        self.store.write(y, x, values)

    def finish(self) -> None:
        import tifffile

        from .. import __version__

        self.store.finish()
        levels = self.store.levels
        base = levels[0]
        rgb = self.rgb
        axes = "YXS" if rgb else ("CYX" if base.ndim == 3 else "YX")
        shape = (*base.shape[1:], base.shape[0]) if rgb else base.shape
        metadata: dict[str, object] = {"axes": axes}
        if self.pixel_size is not None:
            py, px = self.pixel_size
            metadata.update(
                PhysicalSizeX=px, PhysicalSizeXUnit="µm", PhysicalSizeY=py, PhysicalSizeYUnit="µm"
            )
        common = {
            "tile": (CHUNK, CHUNK),
            "dtype": base.dtype,
            "photometric": "rgb" if rgb else "minisblack",
        }
        big = int(np.prod(shape)) * base.dtype.itemsize * 4 // 3 >= 2**32 - 2**25
        with tifffile.TiffWriter(self.path, bigtiff=big, ome=True) as tif:
            tif.write(
                _tiles(base, rgb),
                shape=shape,
                subifds=len(levels) - 1,
                metadata=metadata,
                software=f"napari-pdmfuse {__version__}",
                **common,
            )
            for level in levels[1:]:
                level_shape = (*level.shape[1:], level.shape[0]) if rgb else level.shape
                tif.write(_tiles(level, rgb), shape=level_shape, subfiletype=1, **common)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
