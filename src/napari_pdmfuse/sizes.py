"""Sizes checked before any work starts: tiles, image sides, memory and disk space.

A run that cannot finish (results larger than memory or than the free disk space, a side no TIFF
can hold, tiles that are mostly halo) is refused up front with the numbers, not after an hour.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError, OutputError

#: Largest image side accepted: beyond it, indices overflow 32-bit code and TIFF readers.
MAX_SIDE = 2**31 - 1

#: Bytes per pixel of the focus and confidence maps held next to the fused image (float32 each).
MAP_BYTES = 4

#: Slack kept free when checking memory (tiles, the rest of the system) and disk (TIFF headers).
MEMORY_MARGIN = 64 * 2**20
DISK_MARGIN = 16 * 2**20


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def min_tile(halo: int, align: int) -> int:
    """Smallest useful tile core: at least the method's halo, a multiple of its alignment.

    Smaller cores still stitch exactly but read and compute mostly halo (a 32 px core with a
    160 px halo does 100 times the work), so they are refused rather than run slowly.
    """
    return _round_up(max(halo, align, 1), align)


def check_tile(tile: int, method: str, halo: int, align: int) -> None:
    minimum = min_tile(halo, align)
    if tile < minimum:
        raise InputError(
            f"Tile size {tile} px is smaller than the {method} method's {minimum} px context, so "
            f"each tile would be mostly overlap; use a tile of at least {minimum} px."
        )


def check_sides(shape_yx: tuple[int, int]) -> None:
    if max(shape_yx) > MAX_SIDE:
        raise InputError(
            f"An image of {shape_yx[0]}×{shape_yx[1]} px has a side over {MAX_SIDE} px, more than "
            "any TIFF or image library can hold; crop or bin the stack first."
        )


def gib(n_bytes: float) -> str:
    """A size for a message, in the largest unit that keeps it at least 1 (1.5 GiB, 12.0 MiB,
    3.0 KiB, 200 bytes), so small sizes never all read "0.0 GiB"."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n_bytes) >= scale:
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{int(n_bytes)} bytes"


def result_bytes(shape_yx: tuple[int, int], n_channels: int, dtype: np.dtype) -> int:
    """Memory for one fusion result: fused image plus focus and confidence maps."""
    pixels = shape_yx[0] * shape_yx[1]
    return pixels * (n_channels * np.dtype(dtype).itemsize + 2 * MAP_BYTES)


def available_memory() -> int | None:
    """Memory this process can still allocate without swapping, or None when unknown."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(shape_yx: tuple[int, int], n_channels: int, dtype: np.dtype) -> None:
    """Refuse an in-memory fusion whose results alone would not fit in the free memory."""
    need = result_bytes(shape_yx, n_channels, dtype)
    free = available_memory()
    if free is not None and need + MEMORY_MARGIN > free:
        raise InputError(
            f"The results of a {shape_yx[0]}×{shape_yx[1]} px stack need {gib(need)} of memory "
            f"but only {gib(free)} is available; fuse it with the pdmfuse command, which streams "
            "the results to disk tile by tile, or crop the stack."
        )


def free_disk(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def check_disk(outputs: Sequence[tuple[Path, int]]) -> None:
    """Refuse outputs that would not fit on their file systems, summed per file system."""
    needs: dict[int, tuple[Path, int]] = {}
    for path, n_bytes in outputs:
        folder = path.parent
        try:
            device = os.stat(folder).st_dev
        except OSError:
            continue  # a missing folder is refused by the output checks, with its own message
        first, total = needs.get(device, (folder, 0))
        needs[device] = (first, total + n_bytes)
    for folder, total in needs.values():
        free = free_disk(folder)
        if free is not None and total + DISK_MARGIN > free:
            # The margin is part of the need, or a tiny output on a full disk reads as fitting.
            where = "the current folder" if str(folder) in ("", ".") else str(folder)
            raise OutputError(
                f"The outputs need {gib(total + DISK_MARGIN)} but only {gib(free)} is free in "
                f"{where}; free some space, write them to another disk, or crop the stack."
            )
