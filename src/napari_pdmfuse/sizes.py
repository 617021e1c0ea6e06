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
    """Memory this process can still allocate without swapping or being stopped, or None when
    unknown: the machine's available memory, or less where the process has a limit of its own,
    an address-space limit (``ulimit -v``) or its cgroup's (a container, a systemd unit, a
    batch job's allocation), whose kernel kills the process outright when it is passed."""
    known = [n for n in (system_memory(), limit_left()) if n is not None]
    return max(0, min(known)) if known else None


def limit_left() -> int | None:
    """What this process's own memory limits leave (see :func:`available_memory`), or None
    when it has none: unlike the machine's free memory, which the system can make room in, a
    limit is a wall."""
    known = [n for n in (_address_space_left(), _cgroup_memory_left()) if n is not None]
    return max(0, min(known)) if known else None


def system_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


#: Limits at or above this are no limits (cgroup v1 spells "none" as about 2**63).
NO_LIMIT = 2**60


def _address_space_left() -> int | None:
    """What ``ulimit -v`` (RLIMIT_AS) leaves of the address space, which every mapping counts
    (reserved thread stacks and malloc arenas too), or None without such a limit."""
    try:
        import resource

        import psutil

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft >= NO_LIMIT:
            return None
        return soft - int(psutil.Process().memory_info().vms)
    except Exception:  # no resource module (Windows), or the process cannot be inspected
        return None


#: Where each cgroup version keeps memory accounts: the controller's mount, and the limit, use
#: and memory.stat's reclaimable page-cache entry file by file.
CGROUPS = {
    "v2": ("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    "v1": ("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
           "total_inactive_file"),
}  # fmt: skip


def _cgroup_memory_left(system: Path = Path("/")) -> int | None:
    """The least that the memory limits of this process's cgroup and its parents leave, or
    None without a limit (``system`` is the root of /proc and /sys). Their use counts page
    cache, of which the inactive part is given back before the kernel kills anything, so it is
    not counted as used."""
    try:
        lines = (system / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    left: list[int] = []
    for line in lines:
        hierarchy, controllers, path = ([*line.split(":", 2), "", ""])[:3]
        version = "v2" if hierarchy == "0" and not controllers else "v1"
        if version == "v1" and "memory" not in controllers.split(","):
            continue
        mount, limit_file, use_file, cache_key = CGROUPS[version]
        root = system / mount
        folder = root / path.lstrip("/")
        if not folder.is_dir():  # a cgroup namespace shows its own cgroup as the root
            folder = root
        for group in (folder, *folder.parents):
            if not group.is_relative_to(root):
                break
            room = _cgroup_room(group, limit_file, use_file, cache_key)
            if room is not None:
                left.append(room)
    return min(left) if left else None


def _cgroup_room(group: Path, limit_file: str, use_file: str, cache_key: str) -> int | None:
    """Memory one cgroup's limit leaves, or None if it sets none (or cannot be read)."""
    try:
        limit_text = (group / limit_file).read_text().strip()
        if limit_text == "max" or int(limit_text) >= NO_LIMIT:
            return None
        used = int((group / use_file).read_text())
        stat = (group / "memory.stat").read_text().split("\n")
    except (OSError, ValueError):
        return None
    cache = 0
    for entry in stat:
        key, _, value = entry.partition(" ")
        if key == cache_key and value.strip().isdigit():
            cache = int(value)
    return int(limit_text) - (used - cache)


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
