"""A grid of overlapping tiles, so that every method runs on bounded memory and stitches exactly.

Tile cores partition the plane; each tile is read with a halo at least as large as the method's
receptive field, and its origin is aligned to the method's stride (DWT / pyramid factor), so the
computation inside the core is the same as on the whole image and the halo is simply cropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class Tile:
    read: tuple[slice, slice]  # window read from the image, halo included
    write: tuple[slice, slice]  # core written to the output
    crop: tuple[slice, slice]  # core, in coordinates of the read window


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_grid(shape_yx: tuple[int, int], tile: int, halo: int, align: int) -> Iterator[Tile]:
    """Yield tiles covering ``shape_yx`` row by row, cores of ``tile`` px (rounded to ``align``)."""
    tile = max(align, _round_up(tile, align))
    halo = _round_up(halo, align)
    height, width = shape_yx
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            ry0, rx0 = max(y0 - halo, 0), max(x0 - halo, 0)
            ry1, rx1 = min(y1 + halo, height), min(x1 + halo, width)
            yield Tile(
                read=(slice(ry0, ry1), slice(rx0, rx1)),
                write=(slice(y0, y1), slice(x0, x1)),
                crop=(slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0)),
            )


def count_tiles(shape_yx: tuple[int, int], tile: int, align: int) -> int:
    tile = max(align, _round_up(tile, align))
    return -(-shape_yx[0] // tile) * -(-shape_yx[1] // tile)
