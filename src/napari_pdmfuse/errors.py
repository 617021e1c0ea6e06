"""Errors a user can act on.

Every message is one sentence that names the problem and what to do, so the CLI can print it
as is, the widget can show it in a notification, and scripts can catch one base class.
"""

from __future__ import annotations


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
