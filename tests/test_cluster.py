"""Fusing on a dask.distributed cluster gives what one process gives, and survives losing it.

The cluster is real: a ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1, started
here, so tasks, their inputs and their results cross process boundaries as on a cluster.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

distributed = pytest.importorskip("distributed")

from napari_pdmfuse import FuseOptions, cluster  # noqa: E402
from napari_pdmfuse.cli import main  # noqa: E402
from napari_pdmfuse.methods import build_counts  # noqa: E402
from napari_pdmfuse.planning import plan_job  # noqa: E402
from napari_pdmfuse.reading import open_image  # noqa: E402
from napari_pdmfuse.results import MemoryOutputs  # noqa: E402
from napari_pdmfuse.training import rendering as render  # noqa: E402

DASK = os.path.join(os.path.dirname(sys.executable), "dask")


def _start(tmp_path, n_workers: int, nanny: bool) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and ``n_workers`` single-threaded workers on 127.0.0.1."""
    file = tmp_path / "scheduler.json"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(file),
            ],
            **quiet,
        )
    ]
    for _ in range(200):
        if file.exists() and file.stat().st_size:
            break
        time.sleep(0.05)
    worker = [
        DASK,
        "worker",
        "--scheduler-file",
        str(file),
        "--nthreads",
        "1",
        "--no-dashboard",
        "--host",
        "127.0.0.1",
        "--nanny" if nanny else "--no-nanny",
    ]
    procs += [subprocess.Popen(worker, **quiet) for _ in range(n_workers)]
    with distributed.Client(scheduler_file=str(file), timeout=30) as client:
        client.wait_for_workers(n_workers, timeout=60)
        address = client.scheduler.address
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in reversed(procs):
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    address, procs = _start(tmp_path_factory.mktemp("cluster"), 2, nanny=True)
    yield address
    _stop(procs)


@pytest.fixture(scope="module")
def client(scheduler):
    with distributed.Client(scheduler, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    """A plain stack, a 2-channel OME-TIFF and a time-lapse, as a core facility's folder."""
    folder = tmp_path_factory.mktemp("stacks")
    grey = render.demo_stack(4, 200, seed=3).stack
    tifffile.imwrite(folder / "plain.tif", grey, photometric="minisblack")
    two = np.stack([grey, grey[:, ::-1] // 3], axis=1)
    meta = {"axes": "ZCYX", "Channel": {"Name": ["DAPI", "GFP"]}}
    tifffile.imwrite(folder / "channels.ome.tif", two, ome=True, metadata=meta)
    lapse = np.stack([grey, grey[:, :, ::-1]])
    tifffile.imwrite(folder / "lapse.ome.tif", lapse, ome=True, metadata={"axes": "TZYX"})
    return [folder / n for n in ("plain.tif", "channels.ome.tif", "lapse.ome.tif")]


def _batch(capsys, stacks, out, *extra) -> dict[str, np.ndarray]:
    code = main(
        [
            "batch",
            *map(str, stacks),
            "--out-dir",
            str(out),
            "--focus-map",
            "--method",
            "wavelet",
            "--tile",
            "160",
            "-q",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return {p.name: tifffile.imread(p) for p in sorted(out.iterdir())}


def test_batch_on_a_cluster_equals_the_local_batch(scheduler, stacks, tmp_path, capsys):
    want = _batch(capsys, stacks, tmp_path / "local")
    got = _batch(capsys, stacks, tmp_path / "remote", "--scheduler", scheduler)
    assert sorted(got) == sorted(want) and len(got) == 6
    for name, pixels in want.items():
        assert got[name].dtype == pixels.dtype and np.array_equal(got[name], pixels), name


def test_environment_variable_names_the_scheduler(scheduler, stacks, tmp_path, capsys, monkeypatch):
    local = _batch(capsys, stacks[1:2], tmp_path / "local")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", scheduler)
    code = main(
        [
            "fuse",
            str(stacks[1]),
            "-o",
            str(tmp_path / "f.tif"),
            "--method",
            "wavelet",
            "--tile",
            "160",
            "-q",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert np.array_equal(tifffile.imread(tmp_path / "f.tif"), local["channels_fused.tif"])


@pytest.mark.parametrize("lazy", [True, False], ids=["files", "numpy"])
def test_pdmnet_matches_and_builds_once_per_worker(lazy, client, stacks):
    image = open_image([stacks[0]])
    if not lazy:
        image = type(image)(data=np.asarray(image.data), axes=image.axes)
    job = plan_job(image, FuseOptions(method="pdmnet", tile=96, device="cpu"))
    want = MemoryOutputs(job)
    for _ in job.run(want):
        pass
    got = MemoryOutputs(job)
    client.run(build_counts)  # every worker is up
    steps = list(cluster.run_on_cluster(job, got, client))
    assert steps[0].done == 0 and steps[-1].done == steps[-1].total == job.n_tiles == 9
    builds = [c.get("pdmnet", 0) for c in client.run(build_counts).values()]
    assert max(builds) == 1, builds  # at most once per worker, whatever the tiles and runs
    for g, w in zip(
        (got.fused, got.focus, got.confidence),
        (want.fused, want.focus, want.confidence),
        strict=True,
    ):
        span = float(np.ptp(w.astype(np.float64))) or 1.0
        assert np.abs(g.astype(np.float64) - w.astype(np.float64)).max() <= 1e-4 * span


def test_aligned_time_lapse_on_the_cluster(scheduler, stacks, tmp_path, capsys):
    args = [
        "fuse",
        str(stacks[2]),
        "-o",
        "{}/f.ome.zarr",
        "--coverage",
        "{}/c.tif",
        "--align",
        "translation",
        "--method",
        "argmax",
        "--tile",
        "64",
        "-q",
    ]
    results = []
    for where, extra in (("local", []), ("remote", ["--scheduler", scheduler])):
        out = tmp_path / where
        out.mkdir()
        assert main([a.format(out) for a in args] + extra) == 0, capsys.readouterr().err
        results.append(tifffile.imread(out / "c.tif"))
    assert np.array_equal(*results)


@pytest.mark.parametrize("compression", [None, "zlib"], ids=["memmap", "zlib-tiles"])
def test_file_backed_block_is_sent_as_a_small_graph(compression, stacks, tmp_path):
    import pickle

    path = tmp_path / "stack.tif"
    pixels = tifffile.imread(stacks[0])
    tifffile.imwrite(path, pixels, photometric="minisblack", compression=compression, tile=(64, 64))
    block = open_image([path]).data[:, 50:90, 70:130]
    sent = pickle.dumps(block)
    assert len(sent) < 20_000  # the file travels as its name and layout, not its pixels
    assert np.array_equal(pickle.loads(sent).compute(), pixels[:, 50:90, 70:130])


def test_unreachable_scheduler_is_one_sentence(stacks, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 1.0)
    code = main(
        [
            "fuse",
            str(stacks[0]),
            "-o",
            str(tmp_path / "f.tif"),
            "--method",
            "wavelet",
            "-q",
            "--scheduler",
            "tcp://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pdmfuse: error:") and "scheduler" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _die_on_first_task(flag: str) -> None:
    """On a worker: the first tile task that finds no ``flag`` file kills its process."""
    from napari_pdmfuse import cluster as module

    original = module.__dict__.get("_unpatched_cached_method", module.cached_method)

    def dying(*args):
        try:
            fd = os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return original(*args)
        os.close(fd)
        os._exit(1)  # the worker dies mid-task, as a lost machine would

    module._unpatched_cached_method = original
    module.cached_method = dying


def _unpatch() -> None:
    from napari_pdmfuse import cluster as module

    original = module.__dict__.pop("_unpatched_cached_method", None)
    if original is not None:
        module.cached_method = original


def test_lost_worker_is_recomputed_elsewhere(client, stacks, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    flag = tmp_path / "killed"
    job = plan_job(open_image([stacks[1]]), FuseOptions(method="wavelet", tile=160))
    want = MemoryOutputs(job)
    for _ in job.run(want):
        pass
    got = MemoryOutputs(job)
    client.run(_die_on_first_task, str(flag))
    try:
        steps = list(cluster.run_on_cluster(job, got, client))
    finally:
        client.run(_unpatch)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert flag.exists()  # a worker did die
    assert steps[-1].done == steps[-1].total == 4
    assert np.array_equal(got.fused, want.fused)
    assert np.array_equal(got.focus, want.focus)


def test_no_worker_left_is_one_sentence(stacks, tmp_path, capsys, monkeypatch):
    import cloudpickle

    address, procs = _start(tmp_path, 1, nanny=False)
    monkeypatch.setattr(cluster, "NO_WORKER_TIMEOUT", 2.0)
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        with distributed.Client(address, set_as_default=False) as c:
            c.run(_die_on_first_task, str(tmp_path / "killed"))
        out = tmp_path / "out"
        out.mkdir()
        started = time.monotonic()
        code = main(
            [
                "fuse",
                str(stacks[0]),
                "-o",
                str(out / "f.tif"),
                "--method",
                "wavelet",
                "--tile",
                "160",
                "-q",
                "--scheduler",
                address,
            ]
        )
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
        _stop(procs)
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 30
    assert err.startswith("pdmfuse: error:") and "no worker" in err and err.count("\n") == 1
    assert list(out.iterdir()) == []


class _Future:
    """A future whose first results are lost on the way, as when the worker holding a result
    dies while sending it (distributed raises CommClosedError, an OSError)."""

    def __init__(self, losses: int) -> None:
        self.losses, self.asked = losses, 0

    def result(self) -> str:
        self.asked += 1
        if self.asked <= self.losses:
            raise distributed.comm.core.CommClosedError("in <TCP (closed)>: Stream is closed")
        return "the tile"


def test_a_result_lost_with_its_worker_is_waited_for_again(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    future = _Future(losses=cluster.GATHER_ATTEMPTS - 1)
    assert cluster._result(future) == "the tile" and future.asked == cluster.GATHER_ATTEMPTS
    with pytest.raises(cluster.ClusterError) as lost:
        cluster._result(_Future(losses=cluster.GATHER_ATTEMPTS))
    assert str(lost.value).startswith(
        f"A tile's result was lost {cluster.GATHER_ATTEMPTS} times on its way from the dask "
        "cluster (CommClosedError: in <TCP (closed)>: Stream is closed);"
    )


class _Cancelled:
    """A future the client cancelled when it lost the scheduler."""

    def result(self) -> str:
        from distributed.client import FutureCancelledError

        raise FutureCancelledError("pdmfuse-tile-1", "scheduler-connection-lost")


def test_tiles_dropped_with_the_scheduler_are_one_sentence():
    with pytest.raises(cluster.ClusterError) as dropped:
        cluster._result(_Cancelled())
    message = str(dropped.value)
    assert message.startswith("The dask scheduler dropped this run's tiles (pdmfuse-tile-1 ")
    assert "scheduler-connection-lost" in message
    assert message.endswith("; run again once it is back (a batch run again keeps the stacks "
                            "it fused).")  # fmt: skip
