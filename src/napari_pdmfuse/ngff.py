"""OME-Zarr outputs (OME-NGFF 0.4): written tile by tile, then given a multiscale pyramid.

A result of any size is written chunk-compressed as tiles arrive; once level 0 is complete, each
coarser level is made from the one above, one output chunk at a time, so memory stays at a few
chunks. With the pyramid, napari (or any NGFF viewer) opens a huge result instantly and loads
only what is on screen.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Names written as OME-Zarr; any other output name is a TIFF.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")

#: Side of a chunk in px, and the size down to which levels are added.
CHUNK = 512

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


def level_shapes(shape_yx: tuple[int, int]) -> list[tuple[int, int]]:
    """Plane shapes of the pyramid: full size, then halved until it fits one chunk."""
    shapes = [shape_yx]
    while max(shapes[-1]) > CHUNK and min(shapes[-1]) >= 2:
        height, width = shapes[-1]
        shapes.append((height // 2, width // 2))
    return shapes


def halve(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """2 × 2 means of the last two axes (even sizes), rounded back to integer types."""
    *lead, height, width = block.shape
    means = block.reshape(*lead, height // 2, 2, width // 2, 2).mean(axis=(-3, -1))
    if dtype.kind in "iu":
        means = np.rint(means)
    return means.astype(dtype)


class ZarrPixels:
    """One image as an OME-Zarr group: (y, x) or (c, y, x), level 0 written tile by tile.

    ``pixel_size`` (y, x) in micrometres goes into the scale transformations; ``attributes``
    are stored beside the NGFF metadata (what the values mean, their unit).
    """

    def __init__(
        self,
        path: Path,
        shape_yx: tuple[int, int],
        channels: int | None,
        dtype: np.dtype,
        *,
        pixel_size: tuple[float, float] | None = None,
        attributes: dict[str, object] | None = None,
    ) -> None:
        import zarr

        self.group = zarr.open_group(str(path), mode="w", zarr_format=2)
        self.dtype = np.dtype(dtype)
        self.channels = channels
        self.pixel_size = pixel_size
        self.attributes = attributes or {}
        self.levels = []
        for level, (height, width) in enumerate(level_shapes(shape_yx)):
            lead = () if channels is None else (channels,)
            self.levels.append(
                self.group.create_array(
                    str(level),
                    shape=(*lead, height, width),
                    chunks=(*(1 for _ in lead), CHUNK, CHUNK),
                    dtype=self.dtype,
                    fill_value=0,
                    chunk_key_encoding={"name": "v2", "separator": "/"},
                )
            )

    def write(self, y: int, x: int, values: np.ndarray) -> None:
        """A tile's core, (h, w) or (h, w, C), at (y, x) of level 0."""
        height, width = values.shape[:2]
        if self.channels is None:
            self.levels[0][y : y + height, x : x + width] = values.astype(self.dtype, copy=False)
        else:
            planes = np.moveaxis(values, -1, 0).astype(self.dtype, copy=False)
            self.levels[0][:, y : y + height, x : x + width] = planes

    def finish(self) -> None:
        """Make every coarser level from the one above, one output chunk at a time, and write
        the NGFF metadata (only now, so an unfinished store never looks complete)."""
        for above, below in zip(self.levels, self.levels[1:], strict=False):
            height, width = below.shape[-2:]
            for y in range(0, height, CHUNK):
                for x in range(0, width, CHUNK):
                    ys, xs = slice(y, min(y + CHUNK, height)), slice(x, min(x + CHUNK, width))
                    source = above[..., 2 * ys.start : 2 * ys.stop, 2 * xs.start : 2 * xs.stop]
                    below[..., ys, xs] = halve(np.asarray(source), self.dtype)
        self.group.attrs.update({"multiscales": [self._multiscale()], **self.attributes})

    def close(self) -> None:
        """Nothing is held open: zarr writes each chunk as it goes."""

    def _multiscale(self) -> dict[str, object]:
        unit = {"unit": "micrometer"} if self.pixel_size else {}
        axes = [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}]
        lead: list[float] = []
        if self.channels is not None:
            axes.insert(0, {"name": "c", "type": "channel"})
            lead = [1.0]
        size_y, size_x = self.pixel_size or (1.0, 1.0)
        datasets = [
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [*lead, size_y * 2**level, size_x * 2**level]}
                ],
            }
            for level in range(len(self.levels))
        ]
        return {"version": "0.4", "axes": axes, "datasets": datasets}
