"""How the process's C heap (glibc's malloc) treats the large arrays fusion frees.

Each tile allocates and frees arrays of tens to hundreds of MiB. glibc's defaults suit neither
way the library runs: the command wants those pages reused tile after tile, a napari session
wants them back once a fusion ends. Elsewhere than glibc (macOS, Windows, musl) nothing
changes.
"""

from __future__ import annotations

import ctypes
import sys

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


def _glibc_function(name: str):
    """The C library's function ``name``, or None where it has none (not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):  # another C library (musl has no mallopt)
        return None


def keep_freed_memory() -> None:
    """Have malloc keep what is freed for the next allocation instead of giving it back to the
    system: for the command's own process, which fuses tile after tile and then exits.

    PyTorch keeps no cache of its own on the CPU. By default glibc maps each large array afresh
    and unmaps it when freed, so the kernel zeroes every page of it again for the next tile: a
    twelfth of a PDMNet run's CPU time, as system time. Kept in the heap, the pages are reused
    as they are; peak resident memory grows by about 5 % (fragmentation).
    """
    mallopt = _glibc_function("mallopt")
    if mallopt is None:
        return
    # Arrays up to 256 MiB (a tile's largest) come from the heap, which is trimmed only when
    # as much lies free at its top; 1 GiB saves no more time and costs more memory. Older
    # glibc refuses more than 32 MiB (mallopt returns 0). The trim threshold is set only
    # once a threshold is taken: set alone, it would freeze the mapping threshold at 128 KiB,
    # below glibc's own adjusting one, and every array would be mapped afresh.
    for threshold in (2**28, 2**25):
        if mallopt(M_MMAP_THRESHOLD, threshold):
            mallopt(M_TRIM_THRESHOLD, threshold)
            return


def give_back_freed_memory() -> None:
    """Return the free memory of every heap to the system: for a napari session, after a
    fusion.

    A fusion's tiles are computed in a worker thread, in that thread's own heap (arena), and
    glibc gives an arena's free pages back only when they lie at its top. Without this the
    session's resident memory wandered 950–1 100 MiB over 200 fusions; with it, it stays near
    700 MiB (``benchmarks/napari_soak.py``, docs/PERFORMANCE.md). It takes milliseconds.
    """
    trim = _glibc_function("malloc_trim")
    if trim is not None:
        trim(0)
