"""Outputs appear whole or not at all, and never over a file they must not replace.

Every output is first written to a hidden temporary file in its target folder,
``.NAME.pdmfuse-tmp-PID-HOST-TOKEN``, and moved over the target with :func:`os.replace` only once
all outputs are complete, so an interrupted or failed run leaves the previous files as they
were. A run killed outright (SIGKILL, power loss) can leave such a temporary file, never a file
at the output's name; the next run in that folder removes it once its process is gone. Outputs
are checked (existing, equal to an input, folder missing, no room) before any work, so a long
fusion never ends in a refusal.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from ..errors import OutputError
from ..ngff import is_zarr_name, is_zarr_store

#: Output names taken as TIFF files.
TIFF_SUFFIXES = (".tif", ".tiff")

#: When this process started writing, roughly: temporary files older than this may be stale.
STARTED = time.time()

#: Short tag of this machine, so a run never removes the live temporary file of another machine
#: that shares the folder (a PID means nothing across machines).
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]

TEMP_PATTERN = re.compile(
    r"^\.(?P<name>.+)\.pdmfuse-tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}$"
)


def temp_name(target: Path) -> Path:
    """A hidden sibling of ``target`` naming this process, so the rename stays on one disk."""
    token = secrets.token_hex(4)
    return target.with_name(f".{target.name}.pdmfuse-tmp-{os.getpid()}-{HOST}-{token}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when that cannot be told)."""
    try:
        import psutil

        return bool(psutil.pid_exists(pid))
    except ImportError:
        pass
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def clean_stale_temps(folder: Path, started: float | None = None) -> list[Path]:
    """Remove temporary files that killed runs on this machine left in ``folder``.

    Only files named by :func:`temp_name`, written before this process started, by a process of
    this machine that no longer exists, are removed; anything else is left alone.
    """
    started = STARTED if started is None else started
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        match = TEMP_PATTERN.match(path.name)
        if match is None or match["host"] != HOST:
            continue
        pid = int(match["pid"])
        try:
            stale = path.stat().st_mtime < started and pid != os.getpid() and not pid_alive(pid)
            if stale and path.is_file():
                path.unlink()
                removed.append(path)
            elif stale and path.is_dir():  # an OME-Zarr output, or one set aside to replace
                shutil.rmtree(path)
                removed.append(path)
        except OSError:
            continue
    return removed


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Sequence[str | Path | None],
    inputs: Sequence[str | Path] = (),
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Validate output paths before any work; returns them as Paths (None entries dropped).

    Raises OutputError for a non-TIFF name, an output given twice, an output that is an input
    or lies in an input folder, an existing output without ``overwrite``, or a missing or
    read-only target folder.
    """
    checked: list[Path] = []
    input_paths = [Path(p) for p in inputs]
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        zarr = is_zarr_name(path)
        if path.suffix.lower() not in TIFF_SUFFIXES and not zarr:
            raise OutputError(
                f"The output {path} is not named .tif, .tiff or .ome.zarr; pdmfuse writes TIFF "
                "files and OME-Zarr stores, so give it one of those names."
            )
        if any(_same_file(path, other) for other in checked):
            raise OutputError(f"{path} is named as two outputs; give each output its own name.")
        if any(_same_file(path, src) for src in input_paths):
            raise OutputError(
                f"The output {path} is also an input; write to another file so the input is kept."
            )
        if path.is_dir() and not (zarr and is_zarr_store(path)):
            raise OutputError(
                f"The output {path} is a folder{' but no zarr store' if zarr else ''}; give a "
                "name that does not exist yet."
            )
        if path.is_file() and zarr:
            raise OutputError(
                f"The output {path} is a file, not a zarr store; give a name that does not "
                "exist yet."
            )
        if any(src.is_dir() and _same_file(path.parent, src) for src in input_paths):
            raise OutputError(
                f"The output {path} is inside the input folder, where a later run would take it "
                "for a focal plane; write it to another folder."
            )
        if path.exists() and not overwrite:
            raise OutputError(
                f"The output {path} already exists; choose another name or allow overwriting "
                "(--overwrite)."
            )
        folder = path.parent
        if not folder.is_dir():
            raise OutputError(
                f"The folder {folder} for {path.name} does not exist; create it first."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(
                f"The folder {folder} is not writable; check its permissions or choose another one."
            )
        checked.append(path)
    return checked


@contextmanager
def atomic_files(targets: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``targets``; move them into place only if the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary files are removed and the
    targets are left untouched.
    """
    for folder in {target.parent for target in targets}:
        clean_stale_temps(folder)
    temps: list[Path] = []
    try:
        for target in targets:
            temp = temp_name(target)
            if is_zarr_name(target):
                os.mkdir(temp)  # fails if it exists: never clobber a stranger's folder
            else:
                # O_EXCL: never clobber a stranger's file; mode 0o666 lets the umask decide.
                os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            temps.append(temp)
        yield list(temps)
        for temp in temps:
            _fsync_tree(temp)
        for temp, target in zip(temps, targets, strict=True):
            _replace(temp, target)
        for folder in {target.parent for target in targets}:
            _fsync_folder(folder)
    except BaseException:
        for temp in temps:
            _remove(temp)
        raise


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    """Make a written file, or every file and folder of a written store, durable."""
    if not path.is_dir():
        with path.open("rb+") as handle:
            os.fsync(handle.fileno())
        return
    for entry in [path, *path.rglob("*")]:
        if entry.is_dir():
            _fsync_folder(entry)
        else:
            _fsync_tree(entry)


def _replace(temp: Path, target: Path) -> None:
    """Move ``temp`` over ``target``; a store being replaced is first set aside (a folder
    cannot be renamed over a full one), so a failure in between leaves only temporary names."""
    if not temp.is_dir() or not target.is_dir():
        os.replace(temp, target)
        return
    aside = temp_name(target)
    os.replace(target, aside)
    os.replace(temp, target)
    shutil.rmtree(aside, ignore_errors=True)


def _fsync_folder(folder: Path) -> None:
    """Make the renames durable too (POSIX); a folder that cannot be opened is left as is."""
    if os.name != "posix":
        return
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def write_failed(folder: Path, exc: OSError) -> OutputError:
    """The one message for an output that could not be written (disk full, no permission)."""
    reason = exc.strerror or str(exc)
    return OutputError(
        f"Writing {folder} failed ({reason}); free some space or choose another folder, "
        "nothing was written."
    )


def output_name(path: Path) -> str:
    """The name an output will have: a temporary file's own name tells its target's."""
    match = TEMP_PATTERN.match(path.name)
    return match["name"] if match else path.name
