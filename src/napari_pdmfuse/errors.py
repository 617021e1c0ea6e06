"""Errors a user can act on.

Every message is one sentence that names the problem and what to do, so the CLI can print it
as is, the widget can show it in a notification, and scripts can catch one base class.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with what would not print as one safe line escaped, as Python writes it.

    Linux file names may hold any byte but ``/`` and NUL: bytes that are not UTF-8 (which Python
    keeps as lone surrogates, ``\\udcff``, that no encoder accepts), newlines that would split a
    one-line message or a metadata entry, and terminal escape sequences that would recolour or
    rewrite the user's terminal. Messages and the names recorded in output metadata show them
    as ``\\xff``, ``\\n`` and ``\\x1b`` instead; everything else is kept as written.
    """
    if text.isprintable():
        return text
    escaped = []
    for char in text:
        if "\udc80" <= char <= "\udcff":  # an undecodable byte, as os.fsdecode keeps it
            escaped.append(f"\\x{ord(char) - 0xDC00:02x}")
        elif char.isprintable():
            escaped.append(char)
        else:
            escaped.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
    return "".join(escaped)


class PdmFuseError(Exception):
    """Base class of every error napari-pdmfuse raises on purpose."""


class InputError(PdmFuseError, ValueError):
    """The input stack or an option cannot be fused as given."""


class ReadError(PdmFuseError, OSError):
    """An input file is missing, unreadable or not an image."""


class OutputError(PdmFuseError, OSError):
    """An output cannot be written without losing data (it exists, or it is an input)."""


class PdmFuseWarning(UserWarning):
    """Something the user should know that did not stop the fusion (e.g. a fallback to the CPU)."""


class ClusterError(PdmFuseError):
    """The dask cluster cannot be reached, or has no worker left to run the job."""


class Terminated(BaseException):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so that temporary files are removed on the way
    out."""


#: Exit statuses of the ``pdmfuse`` command.
EXIT_OK = 0
EXIT_FAILED = 1  # batch: a stack failed for a reason that is not the input's (a bug)
EXIT_ERROR = 2  # bad input or options, or an output that cannot be written
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
