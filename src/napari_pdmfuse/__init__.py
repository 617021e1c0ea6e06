"""Fuse microscopy z-stacks into one all-in-focus image, with a focus map and a confidence map."""

from .errors import InputError, OutputError, PdmFuseError, PdmFuseWarning, ReadError
from .fusion import FusionResult, Progress, fuse, fuse_iter
from .methods import METHODS

__version__ = "0.1.0"

__all__ = [
    "METHODS",
    "FusionResult",
    "InputError",
    "OutputError",
    "PdmFuseError",
    "PdmFuseWarning",
    "Progress",
    "ReadError",
    "fuse",
    "fuse_iter",
]
