"""Faults met while a run is under way, made to happen for real for docs/ERRORS.md.

Each run fuses a stack in the current folder while something goes wrong around it: another run
writes the same name, the disk fills up, a stop signal arrives, stderr is closed, the cluster
has no worker, or the file records a Z step that is no size. Each returns what the user saw:
the exit status, stderr and the files the folder holds afterwards. ``tests/test_errors.py``
runs them in a scratch folder, checks their contract and writes them into the table.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import tifffile

from napari_pdmfuse import PdmFuseWarning, cluster
from napari_pdmfuse.cli import main
from napari_pdmfuse.methods.argmax import ArgmaxMethod
from napari_pdmfuse.writing import atomic

#: What the cluster waits here for a worker before giving up (PDMFUSE_NO_WORKER_TIMEOUT).
NO_WORKER_TIMEOUT = 1.0


@dataclass(frozen=True)
class Seen:
    """What a run showed: its exit status, what it printed, and the files it left besides its
    inputs."""

    code: int
    stdout: str
    stderr: str
    left: list[str]

    @property
    def lines(self) -> list[str]:
        return self.stderr.strip().splitlines()


@dataclass(frozen=True)
class Fault:
    what: str
    run: Callable[[], Seen]
    code: int  # the exit status the user must see
    left: tuple[str, ...] = ()  # what the folder must hold afterwards besides the inputs
    posix: bool = False  # needs POSIX signals or descriptors


def stack(name: str = "stack.tif", side: int = 64) -> str:
    data = (np.random.default_rng(0).random((3, side, side)) * 250).astype(np.uint8)
    tifffile.imwrite(name, data, imagej=True, metadata={"axes": "ZYX"})
    return name


def _files() -> set[str]:
    return {str(p) for p in Path().rglob("*") if p.is_file()}


def cli(args: list[str]) -> Seen:
    """``pdmfuse ARGS --quiet`` in this process, with PdmFuseWarnings shown every time."""
    before = _files()
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("always", PdmFuseWarning)  # not once per process: once per run
        code = main([*args, "--quiet"])
    return Seen(code, out.getvalue(), err.getvalue(), sorted(_files() - before))


def _fuse(*args: str, out: str = "fused.tif") -> list[str]:
    return ["fuse", *args, "-o", out, "--method", "argmax"]


def output_appeared() -> Seen:
    """Another run finishes ``fused.tif`` while this one is writing it."""
    inputs = _fuse(stack())
    real = atomic.rename_noreplace

    def another_run_first(source: Path, target: Path) -> None:
        if not Path(target).exists():
            Path(target).write_bytes(b"another run's result")
        real(source, target)

    with mock.patch.object(atomic, "rename_noreplace", another_run_first):
        seen = cli(inputs)
    assert Path("fused.tif").read_bytes() == b"another run's result", "replaced"
    return seen


def input_truncated() -> Seen:
    """Another program truncates the input after the run opened it, before its pixels are read."""
    from napari_pdmfuse.reading import filearray

    inputs = _fuse(stack())
    real = filearray.FileArray._read_into

    def truncated_first(self, out, ranges):  # type: ignore[no-untyped-def]
        os.truncate(self.path, os.path.getsize(self.path) // 2)
        return real(self, out, ranges)

    with mock.patch.object(filearray.FileArray, "_read_into", truncated_first):
        return cli(inputs)


@contextlib.contextmanager
def full_disk(folder: str, size: str = "128k") -> Iterator[None]:
    """``folder`` on a RAM disk of ``size`` where one can be mounted, else a disk that is full
    at the first pixel written (ENOSPC), as a full disk answers."""
    Path(folder).mkdir()
    mounted = (
        os.name == "posix"
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", folder],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if mounted:
        try:
            yield
        finally:
            subprocess.run(["umount", folder], capture_output=True, check=False)
        return

    def no_space(fd: int, data: object, position: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with mock.patch.object(os, "pwrite", no_space):
        yield


def disk_full() -> Seen:
    """Outputs of 1.25 MiB written to a disk with 128 KiB free (the check ahead sees 10 GiB)."""
    inputs = _fuse(stack(side=512), out="small/fused.tif")
    with full_disk("small"):
        return cli([*inputs, "--focus-map", "small/focus.tif"])


def stopped_by(name: str) -> Callable[[], Seen]:
    """A run that gets signal ``name`` while it fuses, as from ``kill``, a closed terminal or
    Ctrl-C."""

    def run() -> Seen:
        inputs = _fuse(stack())
        real = ArgmaxMethod.fuse_tile

        def signalled(self: ArgmaxMethod, block: np.ndarray, lum: np.ndarray) -> object:
            os.kill(os.getpid(), getattr(signal, name))
            return real(self, block, lum)

        with mock.patch.object(ArgmaxMethod, "fuse_tile", signalled):
            return cli(inputs)

    return run


def stderr_closed() -> Seen:
    """``pdmfuse fuse ... 2>&-``: a real process without descriptor 2, not quiet."""
    args = [sys.executable, "-m", "napari_pdmfuse", *_fuse(stack())]
    before = _files()
    done = subprocess.run(
        args,
        stdout=subprocess.PIPE,
        preexec_fn=lambda: os.close(2),
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
        check=False,
    )
    return Seen(done.returncode, done.stdout.decode(), "", sorted(_files() - before))


def memory_ran_out() -> Seen:
    """Every allocation of a tile's fusion fails, as under a memory limit that the tile size
    could not foresee (another program took the memory meanwhile)."""
    inputs = _fuse(stack())

    def short(self: ArgmaxMethod, block: np.ndarray, lum: np.ndarray) -> object:
        raise MemoryError("Unable to allocate 12.0 MiB for an array")

    with mock.patch.object(ArgmaxMethod, "fuse_tile", short):
        return cli([*inputs, "--tile", "16"])  # the smallest: no halving before the error


def no_worker() -> Seen:
    """A dask scheduler without any worker."""
    from distributed import LocalCluster

    inputs = _fuse(stack())
    quiet = logging.getLogger("distributed")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)  # its own worries about a cluster without workers
    try:
        with (
            LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as local,
            mock.patch.object(cluster, "NO_WORKER_TIMEOUT", NO_WORKER_TIMEOUT),
        ):
            return cli([*inputs, "--scheduler", local.scheduler_address])
    finally:
        quiet.setLevel(level)


FAULTS = [
    Fault("Output appeared during the run (another run wrote it first)", output_appeared, 2,
          ("fused.tif",)),
    Fault("Disk full while writing", disk_full, 2),
    Fault("Input truncated while being read", input_truncated, 2),
    Fault("SIGTERM mid-run (`kill`, a batch system's stop)", stopped_by("SIGTERM"), 143,
          posix=True),
    Fault("SIGHUP mid-run (terminal closed, SSH dropped)", stopped_by("SIGHUP"), 143, posix=True),
    Fault("Ctrl-C mid-run", stopped_by("SIGINT"), 130, posix=True),
    Fault("stderr closed (`2>&-`): the run completes", stderr_closed, 0, ("fused.tif",),
          posix=True),
    Fault("Cluster without workers (`--scheduler`)", no_worker, 2),
    Fault("Memory ran out mid-run, even in the smallest tiles", memory_ran_out, 2),
]  # fmt: skip


def z_step(value: float) -> Callable[[], Seen]:
    """A stack whose ImageJ description records a Z step of ``value`` µm."""

    def run() -> Seen:
        data = (np.random.default_rng(0).random((3, 24, 28)) * 250).astype(np.uint8)
        meta = {"axes": "ZYX", "spacing": value, "unit": "um"}
        tifffile.imwrite("stack.tif", data, imagej=True, metadata=meta)
        return cli(_fuse("stack.tif"))

    return run


WARNINGS = [
    Fault("Z step NaN in the file", z_step(float("nan")), 0, ("fused.tif",)),
    Fault("Z step negative in the file", z_step(-1.5), 0, ("fused.tif",)),
]
