"""What happens around each tile's fusion: reading, checks and recovery from memory faults.

:class:`TileFuser` reads a tile, refuses NaN or infinite values, runs the method, zeroes the
confidence where no plane has any texture within the method's reach, and crops the core. When
the GPU runs out of memory it splits the tile into smaller ones (down to the method's minimum
tile, remembered for the tiles that follow) and, if even that fails, moves the method to the CPU
with a warning. When the host runs out (a memory limit, ``ulimit -v`` or a cgroup's, that the
tile size could not foresee), tiles are split the same way, and below the smallest the run ends
with one sentence. Splitting is exact: sub-tiles are read with the full halo at aligned origins.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from . import sizes
from .errors import InputError, PdmFuseWarning
from .methods.base import FusionMethod, TileResult, select_planes
from .sizes import gib, min_tile
from .stack import Normalisation, beyond_float32, is_lazy, non_finite, read_now
from .tiling import Tile


def flat_mask(lum: np.ndarray, radius: int) -> np.ndarray | None:
    """(y, x) mask of pixels with no texture in any plane within ``radius`` px, or None if none.

    Such pixels carry no focus information whatever the method, so their confidence is zero.
    Differences are marked on both pixels they join; ``radius`` must stay below the tile's halo
    so that the mask of a tile's core equals the mask of the whole image there.
    """
    edges = np.zeros(lum.shape[1:], dtype=bool)
    dy = (lum[:, 1:] != lum[:, :-1]).any(axis=0)
    dx = (lum[:, :, 1:] != lum[:, :, :-1]).any(axis=0)
    edges[1:] |= dy
    edges[:-1] |= dy
    edges[:, 1:] |= dx
    edges[:, :-1] |= dx
    if not edges.any():
        return np.ones_like(edges)
    near = ndimage.maximum_filter(edges, size=2 * radius + 1, mode="constant", cval=False)
    return None if near.all() else ~near


#: Cuts every plane of a (rows, cols) window out of a stack, lazily.
Window = Callable[[slice, slice], object]

#: Largest finite float32, the type every method computes in.
FLOAT32_MAX = float(np.finfo(np.float32).max)

#: Blocks whose largest magnitude exceeds this are scaled down before fusing, so that sums,
#: differences and filter gains inside a method cannot overflow float32.
SAFE_MAGNITUDE = 2.0**100


def safe_factor(block: np.ndarray) -> float:
    """1, or the power of two that brings ``block`` within ±SAFE_MAGNITUDE."""
    peak = float(np.abs(block).max(initial=0.0))
    if peak <= SAFE_MAGNITUDE:
        return 1.0
    return 2.0 ** (int(np.ceil(np.log2(peak))) - 100)


def is_cuda_oom(exc: BaseException) -> bool:
    torch = sys.modules.get("torch")  # a method that never imported torch cannot raise its OOM
    return torch is not None and isinstance(exc, torch.cuda.OutOfMemoryError)


#: How PyTorch's RuntimeErrors say that the host ran out of memory: its CPU allocator, and
#: oneDNN, whose convolutions cannot be set up without their scratch memory.
HOST_OOM_TEXTS = ("can't allocate memory", "could not create a primitive")


def is_host_oom(exc: BaseException) -> bool:
    """NumPy's MemoryError, or PyTorch failing to allocate on the host."""
    return isinstance(exc, MemoryError) or (
        isinstance(exc, RuntimeError) and any(text in str(exc) for text in HOST_OOM_TEXTS)
    )


def out_of_memory(side: int | None = None) -> InputError:
    """The one sentence for a run that ran out of memory (even with tiles of ``side`` px)."""
    left = sizes.limit_left()
    where = "" if left is None else f" ({gib(left)} left under this process's memory limit)"
    tiles = "" if side is None else f" even with tiles of {side} px"
    return InputError(
        f"Memory ran out{tiles}{where}; raise the memory limit, close other programs or fuse "
        "fewer planes."
    )


def _free_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def move_to_cpu(method: FusionMethod) -> bool:
    """Move a torch-based method (one with a ``to(device)`` method) to the CPU, if it is one."""
    to = getattr(method, "to", None)
    if not callable(to):
        return False
    to("cpu")
    return True


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def split(tile: Tile, shape_yx: tuple[int, int], halo: int, align: int, core: int) -> list[Tile]:
    """Cut a tile's core into cores of at most ``core`` px, each read with the full halo."""
    halo = _round_up(halo, align)
    (y0, y1), (x0, x1) = ((s.start, s.stop) for s in tile.write)
    height, width = shape_yx
    parts = []
    for sy in range(y0, y1, core):
        for sx in range(x0, x1, core):
            ey, ex = min(sy + core, y1), min(sx + core, x1)
            ry0, rx0 = max(sy - halo, 0), max(sx - halo, 0)
            ry1, rx1 = min(ey + halo, height), min(ex + halo, width)
            parts.append(
                Tile(
                    read=(slice(ry0, ry1), slice(rx0, rx1)),
                    write=(slice(sy, ey), slice(sx, ex)),
                    crop=(slice(sy - ry0, ey - ry0), slice(sx - rx0, ex - rx0)),
                )
            )
    return parts


def _area(window: tuple[slice, slice]) -> int:
    return (window[0].stop - window[0].start) * (window[1].stop - window[1].start)


def read_window(
    data: object, tile: Tile, into: np.ndarray | None = None, window: Window | None = None
) -> np.ndarray:
    """Every plane of a tile's window, in the data's own dtype, read by the calling thread alone.

    Dask's own reader threads gain nothing while the fusion keeps every core busy, and what they
    allocate fragments memory (about 200 MB more peak RSS for a 30 × 4096² stack). A lazy
    window goes into the front of ``into`` (a flat buffer of the data's dtype) when given;
    ``window`` cuts the lazy window (e.g. :meth:`Stack.window`) instead of plain indexing.
    """
    part = window(*tile.read) if window else data[(slice(None), *tile.read)]  # type: ignore[index]
    if not is_lazy(part):
        return np.asarray(part)
    if into is None:
        return read_now(part)
    import dask.array as da
    from dask.local import get_sync  # a function: a name makes dask import distributed

    out = into[: int(np.prod(part.shape))].reshape(part.shape)
    da.store(part, out, lock=False, scheduler=get_sync, callbacks=())  # as read_now says
    return out


@dataclass
class TileFuser:
    """Fuse tiles of one stack with one method; ``core_limit`` shrinks after a GPU OOM."""

    data: object  # (Z, Y, X, C) array
    norm: Normalisation
    method: FusionMethod
    window: Window | None = None  # how to cut a tile's window from ``data``, if not by indexing
    core_limit: int | None = None
    warned: set[str] = field(default_factory=set)

    @property
    def shape_yx(self) -> tuple[int, int]:
        shape = self.data.shape  # type: ignore[attr-defined]
        return int(shape[1]), int(shape[2])

    def __call__(self, tile: Tile, raw: np.ndarray | None = None) -> TileResult:
        """The method's result on ``tile``'s core, cropped; ``raw`` is its window if read."""
        height = tile.write[0].stop - tile.write[0].start
        width = tile.write[1].stop - tile.write[1].start
        if self.core_limit is not None and max(height, width) > self.core_limit:
            return self._in_parts(tile, self.core_limit)
        try:
            return self._fuse(tile, raw)
        except Exception as exc:
            on_host = is_host_oom(exc)
            if not (on_host or is_cuda_oom(exc)):
                raise
            oom = exc.with_traceback(None)  # drop the frames that hold the tile's arrays
        raw = None
        _free_cuda_cache()
        smallest = min_tile(self.method.halo, self.method.align)
        half = max(smallest, _round_up(-(-max(height, width) // 2), self.method.align))
        short = "Memory ran short" if on_host else "The GPU ran out of memory"
        if half < max(height, width):
            self.core_limit = half
            self._warn(f"{short}; continuing with tiles of {half} px.", str(half))
            return self._in_parts(tile, half)
        if on_host:
            raise out_of_memory(max(height, width)) from None
        if not move_to_cpu(self.method):
            raise oom
        self.core_limit = None
        self._warn(
            f"The GPU ran out of memory even with {max(height, width)} px tiles; continuing on "
            "the CPU, which is slower.",
            key="cpu",
        )
        return self._fuse(tile)

    def _warn(self, message: str, key: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, PdmFuseWarning, stacklevel=3)

    def each(self, tiles: Sequence[Tile]) -> Iterator[tuple[Tile, TileResult]]:
        """Fuse ``tiles`` in order, each next one read in a thread while this one is fused.

        Reading a lazy stack costs a tenth to a fifth of fusing a tile; overlapped, it is
        nearly free. Lazy windows are read into two buffers allocated here, in turn: arrays
        allocated by the reading thread would stay in its own malloc arena (about 100 MB more
        peak RSS for a 30 × 2048² stack).
        """
        buffers: list[np.ndarray | None] = [None, None]
        if is_lazy(self.data):
            z, _, _, c = self.data.shape  # type: ignore[attr-defined]
            size = z * c * max(_area(tile.read) for tile in tiles)
            dtype = self.data.dtype  # type: ignore[attr-defined]
            buffers = [np.empty(size, dtype) for _ in buffers]
        with ThreadPoolExecutor(1, thread_name_prefix="pdmfuse-read") as reader:
            ahead = reader.submit(read_window, self.data, tiles[0], buffers[0], self.window)
            for i, tile in enumerate(tiles):
                raw = ahead.result()
                if i + 1 < len(tiles):  # tile i's buffer is reused once tile i is fused
                    after = (tiles[i + 1], buffers[(i + 1) % 2])
                    ahead = reader.submit(read_window, self.data, *after, self.window)
                yield tile, self(tile, raw)

    def _fuse(self, tile: Tile, raw: np.ndarray | None = None) -> TileResult:
        if raw is None:
            raw = read_window(self.data, tile, window=self.window)
        with np.errstate(over="ignore"):  # float64 beyond float32 becomes inf, refused below
            block = raw.astype(np.float32, copy=False)
            block = self.norm.corrected(block, owned=block is not raw)
        floating = raw.dtype.kind == "f"
        if floating and not np.isfinite(block).all():  # integers are finite and far from 2^100
            raise non_finite() if not np.isfinite(raw).all() else beyond_float32()
        lum = self.norm.luminance(block)
        factor = safe_factor(block) if floating else 1.0
        if factor == 1.0:
            result = self.method.fuse_tile(block, lum)
        else:  # values near the float32 limit: fuse scaled down by a power of two (exact)
            result = self.method.fuse_tile(block / np.float32(factor), lum)
            with np.errstate(over="ignore"):  # overshoot past the float32 limit is clipped
                fused = np.clip(result.fused * np.float32(factor), -FLOAT32_MAX, FLOAT32_MAX)
            result = result._replace(fused=fused.astype(np.float32))
        if result.choice is not None:  # a picked slice: its value as read, untouched
            result = result._replace(fused=select_planes(raw, result.choice), choice=None)
        flat = flat_mask(lum, max(self.method.halo - 1, 1))
        if flat is not None:
            result = result._replace(confidence=np.where(flat, np.float32(0), result.confidence))
        return TileResult(*(np.asarray(part[tile.crop]) for part in result[:3]))

    def _in_parts(self, tile: Tile, core: int) -> TileResult:
        parts = split(tile, self.shape_yx, self.method.halo, self.method.align, core)
        y0, x0 = tile.write[0].start, tile.write[1].start
        out: TileResult | None = None
        for part in parts:
            result = self(part)
            if out is None:
                height = tile.write[0].stop - y0
                width = tile.write[1].stop - x0
                out = TileResult(
                    *(np.empty((height, width, *r.shape[2:]), r.dtype) for r in result[:3])
                )
            where = (
                slice(part.write[0].start - y0, part.write[0].stop - y0),
                slice(part.write[1].start - x0, part.write[1].stop - x0),
            )
            for target, value in zip(out[:3], result[:3], strict=True):
                target[where] = value
        assert out is not None
        return out
