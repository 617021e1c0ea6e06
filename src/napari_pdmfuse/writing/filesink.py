"""Writing one focus stack's results (fused image, focus and confidence maps) tile by tile.

``FileSink`` streams tiles into their places in temporary outputs (see :mod:`.atomic`) through
:func:`~napari_pdmfuse.writing.open_output`, so results larger than memory can be written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..methods.base import TileResult
from ..stack import Stack, to_dtype
from ..tiling import Tile
from .meta import NO_SCALE, OutputMeta, Pixels, Scale
from .output import open_output


class PlanePixels:
    """A single-plane writer taking (h, w) or (h, w, C) tiles: channels go to their C index."""

    def __init__(self, pixels: Pixels, channels: bool) -> None:
        self.pixels, self.channels = pixels, channels

    def write(self, y: int, x: int, values: np.ndarray) -> None:
        if not self.channels:
            self.pixels.write((), y, x, values)
            return
        for c in range(values.shape[-1]):
            self.pixels.write((c,), y, x, values[..., c])

    def finish(self) -> None:
        self.pixels.finish()

    def close(self) -> None:
        self.pixels.close()


def open_pixels(
    path: Path,
    shape_yx: tuple[int, int],
    channels: int | None,
    dtype: np.dtype,
    *,
    rgb: bool = False,
    scale: Scale = NO_SCALE,
    attributes: dict[str, object] | None = None,
) -> PlanePixels:
    """A tile-by-tile writer for one (Y, X[, C]) output, by the name it will have (see
    :func:`open_output`). ``channels`` is None for a single-plane image; ``attributes``
    ({"pdmfuse": {"values": …, "unit": …}}) say what the values mean."""
    meaning = (attributes or {}).get("pdmfuse")
    meaning = meaning if isinstance(meaning, dict) else {}
    meta = OutputMeta(
        pixel_size=scale.pixel_size,
        unit=scale.unit,
        time_interval=scale.time_interval,
        values=meaning.get("values"),
        value_unit=meaning.get("unit"),
    )
    if channels is None:
        axes, shape = "YX", shape_yx
    elif rgb:
        axes, shape = "YXS", (*shape_yx, channels)
    else:
        axes, shape = "CYX", (channels, *shape_yx)
    pixels = open_output(path, axes, tuple(shape), dtype, meta)
    return PlanePixels(pixels, channels is not None and not rgb)


class FileSink:
    """A fusion sink that writes each tile core straight into its place in the output files.

    Used with :func:`atomic_files`: the paths are temporary, moved into place only once every
    tile is written and :meth:`finish` has completed them (pyramids); memory use stays at one
    tile. ``focus_scale`` (the physical Z step, µm) writes the focus map in physical units
    instead of slices.
    """

    def __init__(
        self,
        stack: Stack,
        fused: Path,
        *,
        focus_map: Path | None = None,
        confidence: Path | None = None,
        scale: Scale = NO_SCALE,
        focus_scale: float | None = None,
    ) -> None:
        self.dtype = stack.dtype
        self.focus_scale = None if focus_scale is None else np.float32(focus_scale)
        self.grey = stack.layout == "grey"
        channels = None if self.grey else stack.n_channels
        self.fused = open_pixels(
            fused, stack.shape_yx, channels, stack.dtype, rgb=stack.layout == "rgb", scale=scale
        )
        focus_unit = "slice" if focus_scale is None else "micrometer"
        meanings = (
            {"pdmfuse": {"values": "focus position", "unit": focus_unit}},
            {"pdmfuse": {"values": "confidence", "unit": "0 to 1"}},
        )
        f32 = np.dtype(np.float32)
        self.maps = [
            open_pixels(path, stack.shape_yx, None, f32, scale=scale, attributes=meaning)
            if path is not None
            else None
            for path, meaning in zip((focus_map, confidence), meanings, strict=True)
        ]
        self.outputs = [p for p in (self.fused, *self.maps) if p is not None]

    def write(self, tile: Tile, result: TileResult) -> None:
        y, x = tile.write[0].start, tile.write[1].start
        fused = to_dtype(result.fused, self.dtype)
        self.fused.write(y, x, fused[..., 0] if self.grey else fused)
        focus = result.focus if self.focus_scale is None else result.focus * self.focus_scale
        for pixels, values in zip(self.maps, (focus, result.confidence), strict=True):
            if pixels is not None:
                pixels.write(y, x, values)

    def finish(self) -> None:
        """Complete every output once all tiles are in (pyramids, OME-TIFFs)."""
        for pixels in self.outputs:
            pixels.finish()

    def close(self) -> None:
        """Release the files; :func:`atomic_files` makes them durable and moves them in place."""
        for pixels in self.outputs:
            pixels.close()
