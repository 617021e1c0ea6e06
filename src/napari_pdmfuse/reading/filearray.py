"""The pixels of an uncompressed, contiguous image file, read with positioned reads.

Not a memory map: when a file shrinks under a memory map (overwritten, truncated by another
program, a network share that went away), the next read of a lost page kills the process with
SIGBUS — no message, temporary files left, and in a batch every later stack lost. A positioned
read of a shrunken file instead returns short, which is reported as one sentence naming the
file. Reads go straight into the block asked for, one call per run of contiguous bytes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ReadError


class FileArray:
    """A read-only, picklable array over ``shape`` items of ``dtype`` at ``offset`` in a file
    (C order), indexed by integers and step-1 slices as dask's chunked reads index it.

    The file is kept by its absolute path (cluster workers may start elsewhere); messages name
    it as the user gave it.
    """

    def __init__(self, path: Path, dtype: Any, offset: int, shape: tuple[int, ...]) -> None:
        self.name = str(path)
        self.path = str(Path(path).resolve())
        self.dtype = np.dtype(dtype)
        self.offset = int(offset)
        self.shape = tuple(int(n) for n in shape)
        self.ndim = len(self.shape)
        need = self.offset + int(np.prod(self.shape)) * self.dtype.itemsize
        if os.path.getsize(self.path) < need:  # short from the start: the caller says damaged
            raise ValueError(f"{self.name} holds fewer bytes than its pixels need")

    def __getitem__(self, key: Any) -> np.ndarray:
        ranges, drop = self._ranges(key)
        out = np.empty(tuple(len(r) for r in ranges), self.dtype)
        if out.size:
            self._read_into(out, ranges)
        return out.squeeze(axis=tuple(drop)) if drop else out

    def _ranges(self, key: Any) -> tuple[list[range], list[int]]:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        ranges, drop = [], []
        for axis, (k, n) in enumerate(zip(key, self.shape, strict=True)):
            if isinstance(k, slice):
                start, stop, step = k.indices(n)
                if step != 1:
                    raise IndexError("only step-1 slices are supported")
                ranges.append(range(start, max(start, stop)))
            else:
                i = int(k) + n if int(k) < 0 else int(k)
                if not 0 <= i < n:
                    raise IndexError(f"index {k} is out of bounds for an axis of {n}")
                ranges.append(range(i, i + 1))
                drop.append(axis)
        return ranges, drop

    def _read_into(self, out: np.ndarray, ranges: list[range]) -> None:
        itemsize = self.dtype.itemsize
        strides = [int(s) * itemsize for s in np.cumprod((1, *self.shape[:0:-1]))[::-1]]
        # The trailing axes read whole, and the one before them in part, make one byte run.
        first = self.ndim - 1
        while first > 0 and len(ranges[first]) == self.shape[first]:
            first -= 1
        run_bytes = int(np.prod(out.shape[first:])) * itemsize
        positions = np.full((), self.offset + ranges[first].start * strides[first], np.int64)
        for axis in range(first):
            steps = np.asarray(ranges[axis], dtype=np.int64) * strides[axis]
            positions = np.add.outer(positions, steps)
        buffer = memoryview(out).cast("B")
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for i, position in enumerate(positions.ravel().tolist()):
                part = buffer[i * run_bytes : (i + 1) * run_bytes]
                if os.preadv(fd, [part], position) < run_bytes:
                    raise ReadError(
                        f"{self.name} ended before its pixels did; the file was truncated or "
                        "changed while being read: fuse it again once it is complete."
                    )
        finally:
            os.close(fd)
