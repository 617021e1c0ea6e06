"""Outputs appear whole or not at all, and never over a file they must not replace.

Every output is first written to a hidden temporary file in its target folder,
``.NAME.pdmfuse-tmp-PID-HOST-TOKEN``, and moved into place only once all outputs are complete, so
an interrupted or failed run leaves the previous files as they were. Without overwriting, the
move refuses a target that appeared meanwhile (another run writing the same name) atomically;
with overwriting, the old targets are set aside first and put back if any move fails, so a
run's outputs are replaced all together or not at all. A run killed outright (SIGKILL, power
loss) can leave such a temporary file, never a file at the output's name; the next run in that
folder removes it once its process is gone. Outputs are checked (existing, equal to an input,
folder missing, name too long, no room) before any work, so a long fusion never ends in a
refusal, and a write that fails anyway (disk full, quota, permissions) is one
:class:`~napari_pdmfuse.errors.OutputError` with nothing left behind.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from ..errors import OutputError, PdmFuseError, ReadError
from ..ngff import is_zarr_name, is_zarr_store
from .fsops import rename_noreplace

#: Output names taken as TIFF files.
TIFF_SUFFIXES = (".tif", ".tiff")

#: When this process started writing, roughly: temporary files older than this may be stale.
STARTED = time.time()

#: Short tag of this machine, so a run never removes the live temporary file of another machine
#: that shares the folder (a PID means nothing across machines).
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]

#: A temporary file's name; the target's name may hold any character, newlines included.
TEMP_PATTERN = re.compile(
    r"\.(?P<name>.+)\.pdmfuse-tmp-(?P<pid>\d+)-(?P<host>[0-9a-f]{6})-[0-9a-f]{8}\Z", re.DOTALL
)


#: Longest file name when the file system does not say (Linux, macOS and Windows alike).
NAME_MAX = 255

#: Output suffixes kept whole in a shortened temporary name: the format is read from them.
KNOWN_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif")


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, that ``folder``'s file system allows."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX


def _suffix(name: str) -> str:
    """The output's full suffix (``.ome.zarr``, ``.ome.tif``, ``.tif``…), as spelled in ``name``."""
    lower = name.lower()
    for suffix in KNOWN_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix) :]
    return Path(name).suffix[:16]


def temp_name(target: Path) -> Path:
    """A hidden sibling of ``target`` naming this process, so the rename stays on one disk.

    The tag adds about 40 bytes to the name; when that would pass the file system's limit (an
    output named with 220 bytes or more), a hash of the name stands for it, keeping the suffix
    that :func:`output_name` reads the format from.
    """
    token = secrets.token_hex(4)
    tail = f".pdmfuse-tmp-{os.getpid()}-{HOST}-{token}"
    name = target.name
    if len(os.fsencode(f".{name}{tail}")) > name_max(target.parent):
        digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
        name = f"{digest}{_suffix(name)}"
    return target.with_name(f".{name}{tail}")


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
    suffixes: Sequence[str] | None = None,
) -> list[Path]:
    """Validate output paths before any work; returns them as Paths (None entries dropped).

    Raises OutputError for a non-TIFF name, an output given twice, an output that is an input
    or lies in an input folder, an existing output without ``overwrite``, or a missing or
    read-only target folder. ``suffixes`` allows other files (3-D models) whose names the
    caller has checked.
    """
    checked: list[Path] = []
    input_paths = [Path(p) for p in inputs]
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        zarr = is_zarr_name(path)
        other = suffixes is not None and path.suffix.lower() in suffixes
        if path.suffix.lower() not in TIFF_SUFFIXES and not zarr and not other:
            raise OutputError(
                f"The output {path} is not named .tif, .tiff or .ome.zarr; pdmfuse writes TIFF "
                "files and OME-Zarr stores, so give it one of those names."
            )
        limit = name_max(path.parent)
        if len(os.fsencode(path.name)) > limit:
            raise OutputError(
                f"The output name {path.name} is longer than the {limit} bytes the file system "
                "allows; choose a shorter name."
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
def atomic_files(targets: Sequence[Path], *, overwrite: bool = False) -> Iterator[list[Path]]:
    """Yield temporary paths for ``targets``; move them into place only if the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary files are removed and the
    targets are left untouched. Without ``overwrite`` a target that exists when the outputs are
    moved in (another run wrote it meanwhile) is never replaced: the run fails instead. Any
    OSError while writing or moving (disk full, quota, permissions) becomes one OutputError.
    """
    targets = [Path(target) for target in targets]
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
        _move_in(temps, targets, overwrite=overwrite)
        for folder in {target.parent for target in targets}:
            _fsync_folder(folder)
    except BaseException as exc:
        for temp in temps:
            _remove(temp)
        ours = isinstance(exc, OSError) and not isinstance(exc, PdmFuseError)
        if ours and _about_outputs(exc, targets):
            raise write_failed(_folder_of(exc, targets), exc) from None
        raise


def _named(exc: OSError) -> list[Path]:
    names: list[Any] = [exc.filename, exc.filename2]
    return [Path(os.fsdecode(n)) for n in names if isinstance(n, str | bytes | os.PathLike)]


def _about_outputs(exc: OSError, targets: Sequence[Path]) -> bool:
    """Whether an OSError raised while outputs were written is about them.

    Positioned writes, fsync and codecs name no file; an error that names a file that is
    neither an output nor a temporary one (an input read late) is left as it is.
    """
    named = _named(exc)
    return not named or any(
        path in targets or any(TEMP_PATTERN.match(part) for part in path.parts) for path in named
    )


def _folder_of(exc: OSError, targets: Sequence[Path]) -> Path:
    """The output folder an error happened in (the first output's when it names no file)."""
    folders = {target.parent for target in targets}
    for path in _named(exc):
        for parent in path.parents:
            if parent in folders:
                return parent
    return targets[0].parent


def appeared(target: Path) -> OutputError:
    """The message for the loser of two runs writing the same output at once."""
    return OutputError(
        f"The output {target} appeared while this run was writing; nothing was replaced and "
        "nothing was written, so choose another name or run again with --overwrite."
    )


def _move_in(temps: Sequence[Path], targets: Sequence[Path], *, overwrite: bool) -> None:
    """Move every finished temporary output to its name, all of them or none.

    With ``overwrite`` the existing targets are first set aside under temporary names; if any
    move fails (or the run is interrupted), the new outputs are removed and every set-aside
    target is put back, and only once all are in are the old ones deleted. Each move refuses
    an existing target, so a concurrent run's output is never silently replaced.
    """
    aside: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        if overwrite:
            for target in targets:
                if os.path.lexists(target):
                    spare = temp_name(target)
                    os.rename(target, spare)
                    aside.append((target, spare))
        for temp, target in zip(temps, targets, strict=True):
            try:
                rename_noreplace(temp, target)
            except FileExistsError:
                raise appeared(target) from None
            placed.append(target)
    except BaseException:
        for target in placed:
            _remove(target)
        for target, spare in reversed(aside):
            # If a stranger's output took the name, the spare is cleaned up later as stale.
            with suppress(OSError):
                rename_noreplace(spare, target)
        raise
    for _, spare in aside:
        _remove(spare)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with suppress(OSError):
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


#: What to do about a failed write, by its cause.
ADVICE = {
    errno.ENOSPC: "free some space or choose another folder",
    errno.EDQUOT: "free some of your quota or choose another folder",
    errno.EACCES: "check the folder's permissions or choose another folder",
    errno.EPERM: "check the folder's permissions or choose another folder",
    errno.EROFS: "choose a folder on a writable disk",
    errno.ENAMETOOLONG: "choose a shorter name or a shorter folder path",
    errno.EFBIG: "choose a file system that holds larger files",
}


def write_failed(folder: Path, exc: OSError) -> OutputError | ReadError:
    """The one message for an output that could not be written (disk full, no permission…).

    An error that is already one of ours (an output that appeared meanwhile) is kept as is.
    """
    if isinstance(exc, OutputError | ReadError):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    advice = ADVICE.get(exc.errno or 0, "check the folder or choose another one")
    return OutputError(
        f"Writing to {folder} failed ({reason}); {advice}, nothing was written or replaced."
    )


def output_name(path: Path) -> str:
    """The name an output will have: a temporary file's own name tells its target's."""
    match = TEMP_PATTERN.match(path.name)
    return match["name"] if match else path.name
