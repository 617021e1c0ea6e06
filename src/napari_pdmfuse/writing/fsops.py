"""File-system calls that do all of their job or fail: no silent replacement, no short write.

The plain calls fall short in ways that lose data without an error: ``os.rename`` replaces a
file (or an empty folder) that another run put at the name meanwhile, and ``os.pwrite`` on a
filling disk writes what fits and returns the count, leaving a hole of zeros if the caller does
not look. These wrappers turn both into exceptions.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

#: renameat2's flag that makes the rename fail with EEXIST rather than replace (Linux >= 3.15).
RENAME_NOREPLACE = 1

#: "Relative to the current folder", for renameat2's folder arguments.
AT_FDCWD = -100

#: Errors that mean "this file system or kernel cannot do that here", not "it failed".
UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


@cache
def _renameat2() -> Any:
    """glibc's renameat2, or None where there is none (other systems, old or other libcs)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def rename_noreplace(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``, raising FileExistsError if ``target`` exists.

    Atomic with renameat2(RENAME_NOREPLACE) on Linux; elsewhere, files are hard-linked (which
    fails if the name is taken) and the temporary name unlinked. Folders, and files on file
    systems without hard links, are renamed after a last check: a folder cannot be renamed over
    one with files in it, but would silently replace an empty one.
    """
    function = _renameat2()
    if function is not None:
        if (
            function(AT_FDCWD, os.fsencode(source), AT_FDCWD, os.fsencode(target), RENAME_NOREPLACE)
            == 0
        ):
            return
        code = ctypes.get_errno()
        if code not in UNSUPPORTED:
            raise OSError(code, os.strerror(code), str(source), None, str(target))
    if not source.is_dir():
        try:
            os.link(source, target, follow_symlinks=False)
        except OSError as exc:
            if exc.errno not in UNSUPPORTED | {errno.EMLINK}:
                raise
        else:
            os.unlink(source)
            return
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        raise


def write_at(fd: int, data: memoryview, position: int) -> None:
    """Write all of ``data`` at ``position``, or raise.

    ``os.pwrite`` may write only part (a disk filling up writes what fits and returns the
    count); the rest is retried, so a full disk ends in ENOSPC, never in a file with a hole of
    zeros where the pixels should be.
    """
    data = data.cast("B")
    while data:
        written = os.pwrite(fd, data, position)
        if written <= 0:  # nothing written and no error: treat as the disk being full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        data, position = data[written:], position + written
