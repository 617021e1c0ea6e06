"""Write fusion results tile by tile: plain or ImageJ TIFFs, tiled OME-TIFFs and OME-Zarr.

``FileSink`` streams tiles into their places in temporary outputs (see :mod:`.atomic`), so
results larger than memory can be written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from ..fusion import FusionResult
from ..methods.base import TileResult
from ..ngff import ZarrPixels, is_zarr_name
from ..sizes import MAP_BYTES, check_disk
from ..stack import Stack, to_dtype
from ..tiling import Tile
from .atomic import (
    atomic_files,
    check_outputs,
    output_name,
    temp_name,
    write_failed,
)
from .ometiff import OmeTiffPixels, is_ome_tiff_name

#: Bytes a TIFF may hold before it needs BigTIFF, which ImageJ cannot read.
CLASSIC_TIFF_BYTES = 2**32 - 2**25

#: Data types ImageJ opens natively; anything else is written as a plain TIFF.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class Scale:
    """Physical pixel size, recorded in the outputs so measurements keep working downstream."""

    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None  # "um" for micrometres
    time_interval: float | None = None  # seconds between time points


def tiff_layout(
    shape: tuple[int, ...], dtype: np.dtype, *, rgb: bool = False, scale: Scale = Scale()
) -> tuple[tuple[int, ...], dict[str, object]]:
    """Shape on disk and ``tifffile.imwrite`` keywords for a (Y, X[, C]) image.

    Grey and channels are written as an ImageJ-readable (C, Y, X) TIFF whenever ImageJ can open
    the result (8/16-bit or float32, 8-bit RGB, under 4 GiB); other types as plain TIFFs, BigTIFF
    when large, with the same resolution tags.
    """
    from .. import __version__

    dtype = np.dtype(dtype)
    samples = shape[-1] if len(shape) == 3 else 1
    small = int(np.prod(shape)) * dtype.itemsize < CLASSIC_TIFF_BYTES
    kwargs: dict[str, object] = {"software": f"napari-pdmfuse {__version__}"}
    if rgb:
        kwargs["photometric"] = "rgb"
        if samples == 4:
            kwargs["extrasamples"] = ("unassalpha",)
        axes = "YXS"
        imagej = dtype == np.uint8 and samples == 3 and small
    else:
        kwargs["photometric"] = "minisblack"
        if len(shape) == 3:
            shape = (shape[2], shape[0], shape[1])
        axes = "CYX" if len(shape) == 3 else "YX"
        imagej = dtype in IMAGEJ_DTYPES and small
    metadata: dict[str, object] = {"axes": axes}
    if scale.pixel_size is not None and scale.unit:
        py, px = scale.pixel_size
        if imagej:
            kwargs["resolution"] = (1 / px, 1 / py)
            metadata["unit"] = scale.unit
        elif scale.unit == "um":
            kwargs["resolution"] = (1e4 / px, 1e4 / py)
            kwargs["resolutionunit"] = "CENTIMETER"
    return shape, {"imagej": imagej, "metadata": metadata, **kwargs}


def write_tiff(path: Path, data: np.ndarray, *, rgb: bool = False, scale: Scale = Scale()) -> None:
    """Write one 2-D image (grey, RGB(A) or (Y, X, C) channels) as a TIFF; see tiff_layout."""
    data = np.asarray(data)
    _, kwargs = tiff_layout(data.shape, data.dtype, rgb=rgb, scale=scale)
    if data.ndim == 3 and not rgb:
        data = np.moveaxis(data, -1, 0)
    tifffile.imwrite(path, data, **kwargs)


def write_outputs(
    result: FusionResult,
    fused: str | Path,
    *,
    focus_map: str | Path | None = None,
    confidence: str | Path | None = None,
    rgb: bool | None = None,
    scale: Scale = Scale(),
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Write the fused image (input dtype) and, if asked, the float32 focus and confidence maps.

    All files appear together or not at all. ``rgb`` says whether a trailing axis of length 3
    or 4 is colour (the default guesses so) rather than separate channels.
    """
    paths = check_outputs([fused, focus_map, confidence], inputs, overwrite=overwrite)
    image = np.asarray(result.fused)
    if rgb is None:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    arrays: list[tuple[np.ndarray, bool]] = [(image, rgb)]
    if focus_map is not None:
        arrays.append((np.asarray(result.focus_map, dtype=np.float32), False))
    if confidence is not None:
        arrays.append((np.asarray(result.confidence, dtype=np.float32), False))
    try:
        with atomic_files(paths) as temps:
            for temp, (data, is_rgb) in zip(temps, arrays, strict=True):
                write_tiff(temp, data, rgb=is_rgb, scale=scale)
    except OSError as exc:
        raise write_failed(paths[0].parent, exc) from None
    return paths


def output_sizes(stack: Stack, *, focus_map: bool, confidence: bool) -> list[int]:
    """Bytes of each output file's pixels: fused image, then the maps asked for."""
    pixels = stack.shape_yx[0] * stack.shape_yx[1]
    sizes = [pixels * stack.n_channels * stack.dtype.itemsize]
    sizes += [pixels * MAP_BYTES] * (int(focus_map) + int(confidence))
    return sizes


def check_space(stack: Stack, paths: Sequence[Path], *, focus_map: bool, confidence: bool) -> None:
    """Refuse outputs (``paths``: fused, then the maps asked for) that would not fit on disk."""
    sizes = output_sizes(stack, focus_map=focus_map, confidence=confidence)
    check_disk(list(zip(paths, sizes, strict=True)))


class TiffPixels:
    """The pixels of a new uncompressed TIFF, written in place with positioned writes.

    tifffile lays out the file (header, tags, contiguous pixels); tiles then go straight to
    their byte offsets. Unlike a memory map, written pages never count toward this process's
    resident memory, so streaming a result larger than memory keeps the process small.
    """

    def __init__(
        self, path: Path, shape: tuple[int, ...], dtype: np.dtype, *, rgb: bool, scale: Scale
    ) -> None:
        disk_shape, kwargs = tiff_layout(shape, dtype, rgb=rgb, scale=scale)
        layout = tifffile.memmap(path, shape=disk_shape, dtype=dtype, **kwargs)
        self.offset, self.shape, self.dtype = int(layout.offset), layout.shape, layout.dtype
        del layout
        self.rgb = rgb
        self.strides = np.cumprod((1, *self.shape[:0:-1]))[::-1] * self.dtype.itemsize
        self.fd: int | None = os.open(path, os.O_RDWR)

    def write(self, y: int, x: int, values: np.ndarray) -> None:
        """A tile's core, (h, w) or (h, w, C), at (y, x)."""
        if values.ndim == 2 or self.rgb:
            self._put((y, x, 0), values)
        else:
            self._put((0, y, x), np.moveaxis(values, -1, 0))  # channels are planes on disk

    def _put(self, starts: tuple[int, ...], values: np.ndarray) -> None:
        if self.fd is None:
            raise ValueError("the TIFF is closed")
        values = np.ascontiguousarray(values, dtype=self.dtype)
        # Trailing axes the block spans completely merge into one contiguous run per write.
        axis = values.ndim - 1
        while axis > 0 and values.shape[axis] == self.shape[axis]:
            axis -= 1
        base = self.offset + int(np.dot(starts[: axis + 1], self.strides[: axis + 1]))
        for index in np.ndindex(*values.shape[:axis]):
            position = base + int(np.dot(index, self.strides[:axis]))
            os.pwrite(self.fd, memoryview(values[index]).cast("B"), position)

    def finish(self) -> None:
        """Nothing left to add: the layout was complete from the start."""

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def open_pixels(
    path: Path,
    shape_yx: tuple[int, int],
    channels: int | None,
    dtype: np.dtype,
    *,
    rgb: bool = False,
    scale: Scale = Scale(),
    attributes: dict[str, object] | None = None,
) -> TiffPixels | ZarrPixels | OmeTiffPixels:
    """A tile-by-tile writer for one output, by the name it will have: OME-Zarr (``.zarr``),
    tiled pyramidal OME-TIFF (``.ome.tif``) or a plain TIFF that ImageJ opens when it can.

    ``channels`` is None for a single-plane image; ``attributes`` (what the values mean) are
    kept in OME-Zarr outputs.
    """
    name = Path(output_name(path))
    pixel_size = scale.pixel_size if scale.unit == "um" else None
    if is_zarr_name(name):
        return ZarrPixels(
            path, shape_yx, channels, dtype, pixel_size=pixel_size, attributes=attributes
        )
    if is_ome_tiff_name(name):
        scratch = temp_name(path.with_name(name.name))
        return OmeTiffPixels(
            path, scratch, shape_yx, channels, dtype, rgb=rgb, pixel_size=pixel_size
        )
    shape = shape_yx if channels is None else (*shape_yx, channels)
    return TiffPixels(path, shape, dtype, rgb=rgb, scale=scale)


class FileSink:
    """A fusion sink that writes each tile core straight into its place in the output files.

    Used with :func:`atomic_files`: the paths are temporary, moved into place only once every
    tile is written and :meth:`finish` has completed them (OME-Zarr pyramids); memory use
    stays at one tile. ``focus_scale`` (the physical Z step, µm) writes the focus map in
    physical units instead of slices.
    """

    def __init__(
        self,
        stack: Stack,
        fused: Path,
        *,
        focus_map: Path | None = None,
        confidence: Path | None = None,
        scale: Scale = Scale(),
        focus_scale: float | None = None,
    ) -> None:
        self.dtype = stack.dtype
        self.focus_scale = None if focus_scale is None else np.float32(focus_scale)
        self.grey = stack.layout == "grey"
        channels = None if self.grey else stack.n_channels
        self.fused = open_pixels(
            fused, stack.shape_yx, channels, stack.dtype, rgb=stack.layout == "rgb", scale=scale
        )
        focus_unit = "slice" if focus_scale is None else "micrometer"
        meanings = (
            {"pdmfuse": {"values": "focus position", "unit": focus_unit}},
            {"pdmfuse": {"values": "confidence", "unit": "0 to 1"}},
        )
        f32 = np.dtype(np.float32)
        self.maps = [
            open_pixels(path, stack.shape_yx, None, f32, scale=scale, attributes=meaning)
            if path is not None
            else None
            for path, meaning in zip((focus_map, confidence), meanings, strict=True)
        ]
        self.outputs = [p for p in (self.fused, *self.maps) if p is not None]

    def write(self, tile: Tile, result: TileResult) -> None:
        y, x = tile.write[0].start, tile.write[1].start
        fused = to_dtype(result.fused, self.dtype)
        self.fused.write(y, x, fused[..., 0] if self.grey else fused)
        focus = result.focus if self.focus_scale is None else result.focus * self.focus_scale
        for pixels, values in zip(self.maps, (focus, result.confidence), strict=True):
            if pixels is not None:
                pixels.write(y, x, values)

    def finish(self) -> None:
        """Complete every output once all tiles are in (pyramids for OME-Zarr)."""
        for pixels in self.outputs:
            pixels.finish()

    def close(self) -> None:
        """Release the files; :func:`atomic_files` makes them durable and moves them in place."""
        for pixels in self.outputs:
            pixels.close()


# ---------------------------------------------------------------------------------------------
# Hyperstacks: time points and channels kept


#: Axis order of an ImageJ hyperstack.
IMAGEJ_ORDER = "TZCYXS"


def hyperstack_layout(
    data: np.ndarray,
    axes: str,
    *,
    scale: Scale = Scale(),
    channel_names: Sequence[str] | None = None,
    ome: bool = False,
) -> tuple[np.ndarray, dict[str, object]]:
    """The array as written and ``tifffile.imwrite`` keywords for an image with named axes.

    ``axes`` (e.g. "TCYX", "TYXS") says what each axis of ``data`` holds. The file is an ImageJ
    hyperstack (axes put in ImageJ's TCYX order, pixel size and unit, channel names as slice
    labels, frame interval) when ImageJ can open it (8/16-bit or float32, 8-bit RGB, under
    4 GiB), and an OME-TIFF (axes in the given order, PhysicalSizeX/Y, TimeIncrement, channel
    names) when it cannot or when ``ome`` is asked for.
    """
    from .. import __version__

    data = np.asarray(data)
    if len(axes) != data.ndim:
        raise ValueError(f"axes {axes!r} do not fit an array of shape {data.shape}")
    rgb = "S" in axes
    dtype = data.dtype
    small = data.nbytes < CLASSIC_TIFF_BYTES
    imagej_type = dtype == np.uint8 if rgb else dtype in IMAGEJ_DTYPES
    imagej = not ome and imagej_type and small and (not rgb or data.shape[-1] == 3)
    n_channels = data.shape[axes.index("C")] if "C" in axes else 0
    names = list(channel_names) if channel_names is not None and n_channels else None
    if names is not None and len(names) != n_channels:
        names = None
    kwargs: dict[str, object] = {
        "software": f"napari-pdmfuse {__version__}",
        "photometric": "rgb" if rgb else "minisblack",
    }
    if rgb and data.shape[-1] == 4:
        kwargs["extrasamples"] = ("unassalpha",)
    if imagej:
        letters = "".join(a for a in IMAGEJ_ORDER if a in axes)
        data = data.transpose([axes.index(a) for a in letters])
        metadata: dict[str, object] = {"axes": letters}
        if names is not None:
            planes = [n for a, n in zip(letters, data.shape, strict=True) if a not in "YXS"]
            # One label per page; ImageJ's pages run through C fastest, then Z, then T.
            metadata["Labels"] = [names[i % n_channels] for i in range(int(np.prod(planes)))]
        if scale.pixel_size is not None and scale.unit:
            py, px = scale.pixel_size
            kwargs["resolution"] = (1 / px, 1 / py)
            metadata["unit"] = scale.unit
        if scale.time_interval and "T" in axes:
            metadata.update(finterval=scale.time_interval, tunit="sec")
        return data, {"imagej": True, "metadata": metadata, **kwargs}
    metadata = {"axes": axes}
    if scale.pixel_size is not None and scale.unit == "um":
        py, px = scale.pixel_size
        metadata.update(
            PhysicalSizeX=px, PhysicalSizeXUnit="µm", PhysicalSizeY=py, PhysicalSizeYUnit="µm"
        )
    if scale.time_interval and "T" in axes:
        metadata.update(TimeIncrement=scale.time_interval, TimeIncrementUnit="s")
    if names is not None:
        metadata["Channel"] = {"Name": names}
    return data, {"ome": True, "bigtiff": not small, "metadata": metadata, **kwargs}


def write_hyperstack(
    path: Path,
    data: np.ndarray,
    axes: str,
    *,
    scale: Scale = Scale(),
    channel_names: Sequence[str] | None = None,
    ome: bool = False,
) -> None:
    """Write an image with named axes (time points, channels) as ImageJ or OME-TIFF; see
    :func:`hyperstack_layout`."""
    array, kwargs = hyperstack_layout(data, axes, scale=scale, channel_names=channel_names, ome=ome)
    tifffile.imwrite(path, array, **kwargs)
