"""Fuse microscopy z-stacks into one all-in-focus image, with a focus map and a confidence map.

The names below are loaded on first use, not on ``import napari_pdmfuse``: the package is also
imported by napari's plugin discovery and by the ``pdmfuse`` command before every run, and
eagerly importing all of it (SciPy's signal and optimisation code, scikit-image, dask) would
cost a second each time for names most runs never touch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # what the lazy names below resolve to, for type checkers and IDEs
    from .errors import InputError, OutputError, PdmFuseError, PdmFuseWarning, ReadError
    from .files import Outputs, Written, fuse_files, fuse_files_iter, fuse_scenes, scenes
    from .fusion import fuse, fuse_iter
    from .meshes import write_mesh
    from .methods import METHODS
    from .options import FuseOptions
    from .planning import Progress
    from .plates import fuse_plate
    from .results import FusionResult
    from .retouch import RetouchMask

#: Public name → the module that defines it.
_LAZY = {
    "InputError": "errors",
    "OutputError": "errors",
    "PdmFuseError": "errors",
    "PdmFuseWarning": "errors",
    "ReadError": "errors",
    "Outputs": "files",
    "Written": "files",
    "fuse_files": "files",
    "fuse_files_iter": "files",
    "fuse_scenes": "files",
    "fuse_plate": "plates",
    "scenes": "files",
    "fuse": "fusion",
    "fuse_iter": "fusion",
    "write_mesh": "meshes",
    "METHODS": "methods",
    "FuseOptions": "options",
    "Progress": "planning",
    "FusionResult": "results",
    "RetouchMask": "retouch",
}

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
    "RetouchMask",
    "Written",
    "__version__",
    "fuse",
    "fuse_files",
    "fuse_files_iter",
    "fuse_iter",
    "fuse_plate",
    "fuse_scenes",
    "scenes",
    "write_mesh",
]


def __getattr__(name: str) -> Any:
    """Import the module defining ``name`` when the name is first used, and keep it here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
