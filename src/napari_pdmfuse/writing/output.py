"""The one entry point for streamed outputs: the format follows the name the output will have."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import OutputError
from ..ngff import is_zarr_name
from .atomic import output_name, temp_name
from .meta import OME_DTYPES, OutputMeta, Pixels, check_axes, native
from .ometiff import OmeTiffPixels, is_ome_tiff_name
from .omezarr import DEFAULT_NGFF_VERSION, ZarrPixels, check_ngff_version
from .tiff import TiffPixels


def open_output(
    path: Path,
    axes: str,
    shape: tuple[int, ...],
    dtype: np.dtype,
    meta: OutputMeta,
    *,
    ome_zarr_version: str = DEFAULT_NGFF_VERSION,
) -> Pixels:
    """A tile-by-tile writer for an image with ``axes`` (an in-order subset of T C Y X S) of
    ``shape``, at ``path`` (possibly a temporary name, see :func:`.atomic.temp_name`).

    ``.ome.zarr``/``.zarr``: OME-Zarr with a pyramid, NGFF ``ome_zarr_version`` ("0.5", zarr
    format 3, or "0.4", zarr format 2); ``.ome.tif(f)``: a tiled pyramidal OME-TIFF, built from
    a scratch store beside it; any other ``.tif(f)``: an ImageJ hyperstack when ImageJ can open
    it, else an OME-TIFF (BigTIFF when large).
    """
    path = Path(path)
    shape = tuple(int(n) for n in shape)
    check_axes(axes, shape)
    check_ngff_version(ome_zarr_version)
    dtype = native(dtype)
    name = Path(output_name(path))
    check_format(name, dtype)
    if is_zarr_name(name):
        return ZarrPixels(path, axes, shape, dtype, meta, ome_zarr_version)
    if is_ome_tiff_name(name):
        scratch = temp_name(path.with_name(name.name))
        return OmeTiffPixels(path, scratch, axes, shape, dtype, meta)
    return TiffPixels(path, axes, shape, dtype, meta)


def check_format(path: Path, dtype: np.dtype) -> None:
    """Refuse an output whose format cannot hold ``dtype`` pixels, so that no run ends in it.

    Plain TIFFs and OME-Zarr hold every type fused; OME-XML has no pixel type for 64-bit
    integers or 16-bit floats.
    """
    dtype = native(dtype)
    if is_ome_tiff_name(Path(path)) and dtype not in OME_DTYPES:
        raise OutputError(
            f"The output {path} is an OME-TIFF, which cannot hold {dtype} pixels; name it .tif "
            "or .ome.zarr, which keep them."
        )
