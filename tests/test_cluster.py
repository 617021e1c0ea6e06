"""Fusing on a dask.distributed cluster gives what one process gives."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

distributed = pytest.importorskip("distributed")

from napari_pdmfuse import cluster as pdm_cluster  # noqa: E402
from napari_pdmfuse import render  # noqa: E402
from napari_pdmfuse.cli import main  # noqa: E402
from napari_pdmfuse.fusion import MemorySink, plan  # noqa: E402
from napari_pdmfuse.io import read_stack  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
    ) as local:
        yield local


@pytest.fixture(scope="module")
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


@pytest.fixture(scope="module")
def stack_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("dist") / "stack.tif"
    tifffile.imwrite(path, render.demo_stack(4, 320, seed=3).stack, photometric="minisblack")
    return path


def fuse_files(capsys, stack_file, out, method, *extra):
    code = main(
        [
            "fuse",
            str(stack_file),
            "-o",
            str(out / "fused.tif"),
            "--focus-map",
            str(out / "focus.tif"),
            "--confidence",
            str(out / "conf.tif"),
            "--method",
            method,
            "--device",
            "cpu",
            "--tile",
            "160",
            "-q",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    assert code == 0, err
    return [tifffile.imread(out / name) for name in ("fused.tif", "focus.tif", "conf.tif")]


def assert_close(method, got, want):
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        if method == "wavelet":
            assert np.array_equal(g, w)
        else:
            span = float(np.ptp(w.astype(np.float64))) or 1.0
            diff = np.abs(g.astype(np.float64) - w.astype(np.float64)).max()
            assert diff <= 1e-4 * span


@pytest.mark.parametrize("method", ["wavelet", "pdmnet"])
def test_cli_scheduler_matches_single_process(method, cluster, stack_file, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    want = fuse_files(capsys, stack_file, local, method)
    got = fuse_files(capsys, stack_file, remote, method, "--scheduler", cluster.scheduler_address)
    assert_close(method, got, want)


def test_environment_variable_names_the_scheduler(
    cluster, stack_file, tmp_path, capsys, monkeypatch
):
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    want = fuse_files(capsys, stack_file, local, "wavelet")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    got = fuse_files(capsys, stack_file, remote, "wavelet")
    assert_close("wavelet", got, want)


@pytest.mark.parametrize("lazy", [True, False], ids=["files", "numpy"])
def test_python_function_matches_and_builds_once_per_worker(lazy, client, stack_file):
    loaded = read_stack([stack_file])
    data = loaded.data if lazy else np.asarray(loaded.data)
    job = plan(data, method="pdmnet", tile=160, device="cpu")
    want = MemorySink(job.stack)
    for _ in job.run(want):
        pass
    got = MemorySink(job.stack)
    client.run(pdm_cluster.build_counts)  # every worker is up
    steps = list(pdm_cluster.run_on_cluster(job, got, client, method_name="pdmnet", device="cpu"))
    assert steps[0].done == 0 and steps[-1].done == steps[-1].total == job.n_tiles == 4
    builds = [c.get("pdmnet", 0) for c in client.run(pdm_cluster.build_counts).values()]
    # each worker builds pdmnet at most once, whatever the number of tiles, runs and inputs
    assert max(builds) == 1, builds
    for g, w in zip(
        (got.fused, got.focus, got.confidence),
        (want.fused, want.focus, want.confidence),
        strict=True,
    ):
        span = float(np.ptp(w.astype(np.float64))) or 1.0
        assert np.abs(g.astype(np.float64) - w.astype(np.float64)).max() <= 1e-4 * span


@pytest.mark.parametrize("compression", [None, "zlib"], ids=["memmap", "zlib-tiles"])
def test_file_backed_block_is_sent_as_a_small_graph(compression, stack_file, tmp_path):
    import pickle

    path = tmp_path / "stack.tif"
    pixels = tifffile.imread(stack_file)
    tifffile.imwrite(path, pixels, photometric="minisblack", compression=compression, tile=(64, 64))
    block = read_stack([path]).data[:, 50:90, 70:130]
    sent = pickle.dumps(block)
    assert len(sent) < 20_000  # the file travels as its name and layout, not its pixels
    assert np.array_equal(pickle.loads(sent).compute(), pixels[:, 50:90, 70:130])


def test_compressed_tiff_on_the_cluster(cluster, stack_file, tmp_path, capsys):
    packed = tmp_path / "packed.tif"
    pixels = tifffile.imread(stack_file)
    tifffile.imwrite(packed, pixels, photometric="minisblack", compression="zlib", tile=(64, 64))
    local, remote = tmp_path / "local", tmp_path / "remote"
    local.mkdir()
    remote.mkdir()
    want = fuse_files(capsys, stack_file, local, "wavelet")
    got = fuse_files(capsys, packed, remote, "wavelet", "--scheduler", cluster.scheduler_address)
    assert_close("wavelet", got, want)


def test_unreachable_scheduler_is_one_sentence(stack_file, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pdm_cluster, "CONNECT_TIMEOUT", 1.0)
    code = main(
        [
            "fuse",
            str(stack_file),
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
    assert not (tmp_path / "f.tif").exists()
    assert list(tmp_path.iterdir()) == []


def test_scheduler_refused_with_hyperstack_options(stack_file, tmp_path, capsys):
    code = main(
        [
            "fuse",
            str(stack_file),
            "-o",
            str(tmp_path / "f.tif"),
            "--axes",
            "ZYX",
            "--scheduler",
            "tcp://127.0.0.1:9",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "--scheduler" in err
    assert list(tmp_path.iterdir()) == []


def _kill_once(flag: str) -> None:
    """On a worker: make the first tile task that sees no ``flag`` file kill its process."""
    import os

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


def test_lost_worker_is_recomputed_elsewhere(client, stack_file, tmp_path):
    import sys

    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    flag = tmp_path / "killed"
    job = plan(read_stack([stack_file]).data, method="wavelet", tile=160)
    want = MemorySink(job.stack)
    for _ in job.run(want):
        pass
    got = MemorySink(job.stack)
    client.run(_kill_once, str(flag))
    try:
        steps = list(pdm_cluster.run_on_cluster(job, got, client, method_name="wavelet"))
    finally:
        client.run(_unpatch)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert flag.exists()  # a worker did die
    assert steps[-1].done == steps[-1].total == 4
    assert np.array_equal(got.fused, want.fused)
    assert np.array_equal(got.focus, want.focus)
    assert np.array_equal(got.confidence, want.confidence)
