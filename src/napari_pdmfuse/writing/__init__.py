"""Writing results: streamed tile by tile into OME-Zarr stores (NGFF 0.5 or 0.4), tiled
pyramidal OME-TIFFs and ImageJ hyperstacks (:func:`open_output`).

Every output is written under a temporary name and moved into place only when complete (see
:mod:`.atomic`).
"""

from __future__ import annotations

from .atomic import atomic_files, check_outputs, output_name, temp_name, write_failed
from .meta import CLASSIC_TIFF_BYTES, IMAGEJ_DTYPES, OutputMeta, Pixels
from .omezarr import DEFAULT_NGFF_VERSION, NGFF_VERSIONS
from .output import check_format, open_output

__all__ = [
    "CLASSIC_TIFF_BYTES",
    "DEFAULT_NGFF_VERSION",
    "IMAGEJ_DTYPES",
    "NGFF_VERSIONS",
    "OutputMeta",
    "Pixels",
    "atomic_files",
    "check_format",
    "check_outputs",
    "open_output",
    "output_name",
    "temp_name",
    "write_failed",
]
