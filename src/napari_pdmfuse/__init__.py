"""Fuse microscopy z-stacks into one all-in-focus image, with a focus map and a confidence map."""

from .errors import InputError, OutputError, PdmFuseError, PdmFuseWarning, ReadError
from .files import Outputs, Written, fuse_files, fuse_files_iter
from .fusion import fuse, fuse_iter
from .methods import METHODS
from .options import FuseOptions
from .planning import Progress
from .results import FusionResult

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "FuseOptions",
    "FusionResult",
    "InputError",
    "OutputError",
    "Outputs",
    "PdmFuseError",
    "PdmFuseWarning",
    "Progress",
    "ReadError",
    "Written",
    "fuse",
    "fuse_files",
    "fuse_files_iter",
    "fuse_iter",
]
