"""Fuse on an existing dask.distributed cluster: one task per tile, results stitched here.

The client plans the job as usual; each tile becomes a task that reads its haloed block on the
worker (a small graph over the input files, or a slice of an array scattered once), fuses it
with a method built once per worker process, and returns the cropped core. Results are written
into the sink as they arrive, so memory on the client stays one tile deep. Tasks lost with a
worker are recomputed elsewhere by the scheduler, and failed tasks are retried twice.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .executing import TileFuser
from .fusion import FusionPlan, Progress, Sink
from .methods import get_method
from .methods.base import FusionMethod, TileResult
from .stack import Normalisation, is_lazy
from .tiling import Tile, tile_grid

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0

#: Methods built on this process, by (name, device, weights): each worker loads a model once.
_METHODS: dict[tuple[str, str, str | None], FusionMethod] = {}
_LOCK = threading.Lock()
_BUILDS: dict[str, int] = {}


def build_counts() -> dict[str, int]:
    """How many times this process built each method, by name (see ``client.run``)."""
    return dict(_BUILDS)


def cached_method(name: str, device: str, weights: str | None) -> FusionMethod:
    """The method ``name``, built on the first call in this process and reused after."""
    key = (name, device, weights)
    with _LOCK:
        method = _METHODS.get(key)
        if method is None:
            method = get_method(name, device=device, weights=weights)
            _METHODS[key] = method
            _BUILDS[name] = _BUILDS.get(name, 0) + 1
    return method


class _Lazy:
    """A dask array slice carried as an opaque object, so the task computes it on the worker."""

    def __init__(self, array: Any) -> None:
        self.array = array

    def load(self) -> np.ndarray:
        return np.asarray(self.array.compute(scheduler="sync"))


class _Window:
    """A haloed block standing in for the whole (Z, Y, X, C) stack: reads inside the block only.

    TileFuser reads with whole-image coordinates (and splits tiles after a GPU OOM the same way
    as on one machine), so the block answers those reads shifted by its origin.
    """

    def __init__(self, block: np.ndarray, origin: tuple[int, int], shape: tuple[int, ...]):
        self.block = block
        self.origin = origin
        self.shape = shape
        self.dtype = block.dtype

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = key
        y0, x0 = self.origin
        return self.block[:, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0]


def fuse_tile_task(
    source: Any,
    tile: Tile,
    shape: tuple[int, ...],
    norm: Normalisation,
    method_name: str,
    device: str,
    weights: str | None,
) -> TileResult:
    """Run on a worker: read the tile's block, fuse it as on one machine, return the core."""
    if isinstance(source, _Lazy):
        block = source.load()
    else:  # the whole stack, scattered once
        block = np.asarray(source[(slice(None), *tile.read)])
    method = cached_method(method_name, device, weights)
    window = _Window(block, (tile.read[0].start, tile.read[1].start), shape)
    return TileFuser(window, norm, method)(tile)


def run_on_cluster(
    job: FusionPlan,
    sink: Sink,
    client: Any,
    *,
    method_name: str,
    device: str = "auto",
    weights: str | Path | None = None,
) -> Generator[Progress, None, None]:
    """Fuse every tile of ``job`` on ``client``'s cluster into ``sink``, yielding progress."""
    from distributed import as_completed

    stack, method = job.stack, job.method
    data = stack.data
    weights = None if weights is None else str(weights)
    total = job.n_tiles
    yield Progress(0, total)
    tiles = list(tile_grid(stack.shape_yx, job.tile_size, method.halo, method.align))
    shape = tuple(int(n) for n in data.shape)
    is_dask = is_lazy(data)
    scattered = None if is_dask else client.scatter(np.asarray(data), broadcast=False)
    run_id = uuid.uuid4().hex[:12]
    futures = {}
    for index, tile in enumerate(tiles):
        source = _Lazy(stack.window(*tile.read)) if is_dask else scattered
        future = client.submit(
            fuse_tile_task,
            source,
            tile,
            shape,
            job.norm,
            method_name,
            device,
            weights,
            key=f"pdmfuse-tile-{run_id}-{index}",
            pure=False,
            retries=2,
        )
        futures[future.key] = (future, tile)
    pending = dict(futures)
    try:
        arrivals = as_completed([f for f, _ in futures.values()], loop=client.loop)
        for done, future in enumerate(arrivals, 1):
            result = future.result()
            _, tile = pending.pop(future.key)
            sink.write(tile, result)
            future.release()
            yield Progress(done, total)
    finally:
        if pending:  # stopped early: drop what is still queued
            client.cancel([f for f, _ in pending.values()])
        if scattered is not None:
            client.cancel([scattered])


def connect(address: str, timeout: float | None = None) -> Any:
    """A client of the scheduler at ``address``, or InputError in one sentence."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - a dependency
        raise InputError(
            "--scheduler needs the 'distributed' package; install it with pip install distributed."
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(
            f"Cannot reach the dask scheduler at {address} within {timeout:g} s ({reason}); "
            "check the address and that the scheduler is running."
        ) from None
