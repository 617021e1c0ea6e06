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
