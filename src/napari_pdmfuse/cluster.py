"""Run a job on an existing dask.distributed cluster: one task per tile, results written here.

The client plans the job as on one machine; each tile of each part becomes a task that reads
its haloed block on the worker (a small graph over the input files; an aligned part's reader
or an in-memory stack is sent once per part), fuses it with a method built once per worker
process, and returns the cropped core. At most a few tasks per worker thread are in flight, and
results are written into the sink as they arrive, so the client's memory stays a few tiles
deep. Tasks lost with a worker are recomputed elsewhere by the scheduler, failed tasks are
retried twice, and a cluster left without any worker for :data:`NO_WORKER_TIMEOUT` seconds ends
the run with one sentence instead of waiting forever.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator, Iterator
from concurrent.futures import CancelledError
from typing import Any

import numpy as np

from .errors import ClusterError, PdmFuseError
from .executing import TileFuser
from .methods import cached_method
from .methods.base import TileResult
from .planning import FusionPlan, Job, Part, PartSink, Progress
from .stack import Normalisation, is_lazy
from .tiling import Tile

#: Seconds to wait for a scheduler before giving up.
CONNECT_TIMEOUT = 10.0

#: Seconds a run waits, with tiles still to fuse, for a cluster that has no worker left.
NO_WORKER_TIMEOUT = float(os.environ.get("PDMFUSE_NO_WORKER_TIMEOUT", "60"))

#: Tasks in flight per worker thread: enough to keep every worker busy between results.
IN_FLIGHT_PER_THREAD = 2

#: Seconds between looks for finished tasks while none has arrived.
POLL_SECONDS = 0.02


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
    method: tuple[str, str, str | None, str],
) -> TileResult:
    """Run on a worker: read the tile's block, fuse it as on one machine, return the core."""
    if isinstance(source, _Lazy):
        block = source.load()
    elif hasattr(source, "window"):  # an aligned part's reader, sent once
        block = np.asarray(source.window(*tile.read))
    else:  # an in-memory stack, sent once
        block = np.asarray(source[(slice(None), *tile.read)])
    window = _Window(block, (tile.read[0].start, tile.read[1].start), shape)
    return TileFuser(window, norm, cached_method(*method))(tile)


def _tasks(job: Job, client: Any, run_id: str) -> Iterator[tuple[Any, Part, FusionPlan, Tile]]:
    """Submit each tile of each part in turn, lazily: parts are planned when reached."""
    opts = job.options
    weights = None if opts.weights is None else str(opts.weights)
    method = (opts.method, opts.device, weights, opts.selection)
    index = 0
    for part, plan in job.plans():
        shape = tuple(int(n) for n in plan.stack.data.shape)
        shared = _shared_source(plan, client)
        for tile in plan.tiles():
            source = shared if shared is not None else _Lazy(plan.window(*tile.read))
            future = client.submit(
                fuse_tile_task,
                source,
                tile,
                shape,
                plan.norm,
                method,
                key=f"pdmfuse-tile-{run_id}-{index}",
                pure=False,
                retries=2,
            )
            index += 1
            yield future, part, plan, tile


def _shared_source(plan: FusionPlan, client: Any) -> Any:
    """What tasks of this part read from, sent to the cluster once: an aligned reader or an
    in-memory stack; None when each task carries its own small graph over the files."""
    if plan.reader is not None:
        return client.scatter(plan.reader, broadcast=False, hash=False)
    if not is_lazy(plan.stack.data):
        return client.scatter(np.asarray(plan.stack.data), broadcast=False, hash=False)
    return None


def _n_threads(client: Any) -> int:
    workers = client.scheduler_info().get("workers", {})
    return sum(int(w.get("nthreads", 1)) for w in workers.values())


def run_on_cluster(job: Job, sink: Any, client: Any) -> Generator[Progress, None, None]:
    """Fuse every tile of ``job`` on ``client``'s cluster into ``sink``, yielding progress."""
    from distributed import as_completed

    total = job.n_tiles
    yield Progress(0, total)
    tasks = _tasks(job, client, uuid.uuid4().hex[:12])
    pending: dict[str, tuple[Any, Part, Tile]] = {}
    sinks: dict[Part, PartSink] = {}
    arrivals = as_completed([], loop=client.loop)
    done, exhausted = 0, False
    no_workers_since: float | None = None
    last_check = time.monotonic()
    try:
        while pending or not exhausted:
            limit = max(4, IN_FLIGHT_PER_THREAD * _n_threads(client))
            while not exhausted and len(pending) < limit:
                try:
                    future, part, plan, tile = next(tasks)
                except StopIteration:
                    exhausted = True
                    break
                if part not in sinks:
                    sinks[part] = PartSink(sink, part, plan, job.alignments)
                pending[future.key] = (future, part, tile)
                arrivals.add(future)
            finished = arrivals.next_batch(block=False) if pending else []
            if not finished:
                if time.monotonic() - last_check >= 1.0:
                    last_check = time.monotonic()
                    no_workers_since = _check_workers(client, no_workers_since)
                time.sleep(POLL_SECONDS)
                continue
            no_workers_since = None
            for future in finished:
                _, part, tile = pending.pop(future.key)
                sinks[part].write(tile, _result(future))
                future.release()
                done += 1
                yield Progress(done, total)
    except (OSError, TimeoutError) as exc:
        if isinstance(exc, PdmFuseError):
            raise
        raise ClusterError(
            f"The connection to the dask cluster was lost ({_reason(exc)}); check the scheduler "
            "and run again."
        ) from None
    finally:
        tasks.close()  # drops the data sent once per part
        if pending:  # stopped early: drop what is still queued
            client.cancel([f for f, _, _ in pending.values()])


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0].rstrip(".") if str(exc) else ""
    return text or type(exc).__name__


#: Times a result is asked for when the worker holding it dies while sending it.
GATHER_ATTEMPTS = 3


def _result(future: Any) -> TileResult:
    """A task's result; a failure that is not the input's (a worker killed again and again,
    a worker without napari-pdmfuse) becomes one sentence.

    A result whose worker dies while sending it (the connection closes mid-transfer) is lost
    with that worker, and the scheduler computes it again elsewhere: it is waited for again.
    """
    attempt = 1
    while True:
        try:
            return future.result()
        except PdmFuseError:
            raise
        except OSError as exc:  # distributed's CommClosedError: the sender went away
            if attempt >= GATHER_ATTEMPTS:
                raise ClusterError(
                    f"A tile's result was lost {GATHER_ATTEMPTS} times on its way from the dask "
                    f"cluster ({type(exc).__name__}: {_reason(exc)}); check that the workers "
                    "stay up, then run again."
                ) from None
            attempt += 1
            time.sleep(1.0)
        except CancelledError as exc:  # the scheduler went away, and with it the tasks
            raise ClusterError(
                f"The dask scheduler dropped this run's tiles ({_reason(exc)}); run again once it "
                "is back (a batch run again keeps the stacks it fused)."
            ) from None
        except Exception as exc:
            raise ClusterError(
                f"A tile failed on the dask cluster ({type(exc).__name__}: {_reason(exc)}); "
                "check that every worker has napari-pdmfuse and enough memory, then run again."
            ) from None


def _check_workers(client: Any, since: float | None) -> float | None:
    """When the cluster has had no worker for too long, say so in one sentence."""
    if client.scheduler_info().get("workers"):
        return None
    now = time.monotonic()
    if since is None:
        return now
    if now - since >= NO_WORKER_TIMEOUT:
        raise ClusterError(
            f"The dask cluster has had no worker for {NO_WORKER_TIMEOUT:g} s, so the remaining "
            "tiles cannot be fused; start workers (dask worker ADDRESS) and run again."
        )
    return since


def connect(address: str, timeout: float | None = None) -> Any:
    """A client of the scheduler at ``address``, or a one-sentence error."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - a dependency
        raise ClusterError(
            "Fusing on a cluster needs the 'distributed' package; install it with "
            "pip install distributed."
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:
        raise ClusterError(
            f"Cannot reach the dask scheduler at {address} within {timeout:g} s ({_reason(exc)}); "
            "check the address and that the scheduler is running."
        ) from None
