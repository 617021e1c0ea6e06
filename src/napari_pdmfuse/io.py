"""Read focus stacks from disk as lazy, Z-first arrays with their physical scale.

The CLI and the widget both start here, so a stack on disk is checked once, with messages that
name the offending file. Nothing is decoded until the fusion asks for a tile: TIFFs go through
tifffile's zarr store (keeping the file's own chunking), other formats through one delayed read
per plane, so a stack larger than memory can still be fused tile by tile.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import tifffile
import zarr

from .errors import InputError, PdmFuseError, PdmFuseWarning, ReadError
from .ngff import is_zarr_store, multiscales, transforms

#: File name suffixes taken as focal planes when the input is a folder.
IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: Axes tifffile uses for planes of an unlabelled multi-page file (image sequence / unknown).
GENERIC_PLANE_AXES = "IQ"

#: Axes that can hold the focal planes.
PLANE_AXES = "Z" + GENERIC_PLANE_AXES

#: Length units as written by ImageJ, OME and TIFF tags, to micrometres.
_UNIT_NAMES = {"um": "um", "\u00b5m": "um", "\u03bcm": "um", "micron": "um", "microns": "um"}
_UNIT_SCALE_TO_UM = {"nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "in": 25400.0, "inch": 25400.0}


@dataclass(frozen=True)
class LoadedStack:
    """A focus stack read from disk, not yet decoded.

    ``data`` is a dask array shaped (Z, Y, X) or (Z, Y, X, S|C) as ``axes`` says: "S" is a
    trailing RGB(A) sample axis, "C" a channel axis (ImageJ/OME channels). Physical sizes are in
    ``unit`` (micrometres when the file said so) and None when the file does not record them.
    """

    data: da.Array
    axes: str
    sources: tuple[Path, ...]
    z_spacing: float | None = None
    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None

    @property
    def rgb(self) -> bool:
        return self.axes.endswith("S") and self.data.shape[-1] in (3, 4)

    @property
    def channel_axis(self) -> int | None:
        """The channel axis to give :func:`napari_pdmfuse.fuse`, None for grey or RGB."""
        return -1 if len(self.axes) == 4 and not self.rgb else None


def read_stack(inputs: Sequence[str | Path]) -> LoadedStack:
    """Open a multi-page TIFF, a folder of planes, or a list of plane files, lazily.

    Raises ReadError for missing or unreadable files and InputError for files that are readable
    but do not make a focus stack (one plane, planes of different sizes, an empty folder).
    """
    paths = _checked_paths(inputs)
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir():
            return _read_planes(_folder_images(path))
        if not is_tiff(path):
            # Not a TIFF: a lone PNG/JPEG holds one plane, which _read_planes reports clearly.
            return _read_planes(paths)
        return _read_tiff_stack(path)
    return _read_planes(paths)


#: OME-NGFF axis names and the letters used here.
NGFF_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def _read_zarr(path: Path, axes: str | None) -> Hyperstack:
    """An OME-Zarr image (its full-resolution level) or a plain zarr array, lazily.

    The axes and physical sizes come from the NGFF metadata; a plain array of three axes is
    taken as (Z, Y, X), anything else needs ``axes``.
    """
    try:
        node = zarr.open(str(path), mode="r")
        image = None
        if not isinstance(node, zarr.Array):
            image = multiscales(dict(node.attrs))[0]  # type: ignore[index]
        dataset = "" if image is None else str(image["datasets"][0]["path"])
        array = node[dataset] if dataset else node
        names = [] if image is None else [str(a.get("name", "")).lower() for a in image["axes"]]
        shape = tuple(int(n) for n in array.shape)
    except Exception:
        raise ReadError(
            f"{path} is a zarr store without an image pdmfuse can read; give an OME-Zarr image "
            "or a zarr array."
        ) from None
    if axes is not None:
        file_axes = _named_axes(path, shape, axes)
    elif names and all(n in NGFF_AXES for n in names):
        file_axes = "".join(NGFF_AXES[n] for n in names)
    elif len(shape) == 3:
        file_axes = "ZYX"
    else:
        raise InputError(
            f"{path} does not say what its {len(shape)} axes hold; name them with --axes "
            "(e.g. --axes ZCYX)."
        )
    if "Z" not in file_axes:
        raise InputError(f"{path} has no Z axis, so it is one plane, not a focus stack.")
    scale = [1.0] * len(shape)
    unit = None
    if image is not None:
        scale, _ = transforms(image["datasets"][0].get("coordinateTransformations"), len(shape))
        units = {a.get("name", "").lower(): a.get("unit") for a in image["axes"]}
        unit = "um" if units.get("x") in ("micrometer", "µm", "um") else None
    size = dict(zip(file_axes, scale, strict=True))
    itemsize = np.dtype(array.dtype).itemsize
    chunks = _read_chunks(tuple(array.chunks), file_axes, shape, itemsize, planes_together=True)
    return Hyperstack(
        data=_lazy(_GuardedArray(array, path, dataset), chunks),
        axes=file_axes,
        sources=(path,),
        z_spacing=size["Z"] if unit else None,
        pixel_size=(size["Y"], size["X"]) if unit else None,
        unit=unit,
    )


def _checked_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """The inputs as paths: present, and either one file or folder, or several files."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("No input given; name a multi-page TIFF, a folder of planes or files.")
    for path in paths:
        if not path.exists():
            raise ReadError(f"Input {path} does not exist; check the path.")
    if len(paths) == 1:
        return paths
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise InputError(
            f"{folders[0]} is a folder given together with other inputs; give either one folder "
            "or a list of image files."
        )
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path} is given twice; list each focal plane once.")
        seen[key] = path
    return paths


#: Axis letters of a hyperstack (see :mod:`napari_pdmfuse.hyperstack`).
HYPERSTACK_AXES = "TZCSYX"


@dataclass(frozen=True)
class Hyperstack:
    """Everything a file holds, not yet decoded: time points, focal planes, channels.

    ``data`` is a dask array whose axes ``axes`` names with the letters T (time), Z (focal
    planes), C (channels), S (RGB samples), Y and X, in the file's order (e.g. "TZCYX"); axes of
    length one are dropped unless named with ``axes=``. ``channel_names`` are those the file
    records (OME channel names, ImageJ slice labels), one per channel, or None.
    """

    data: da.Array
    axes: str
    sources: tuple[Path, ...]
    z_spacing: float | None = None
    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None
    channel_names: tuple[str, ...] | None = None
    time_interval: float | None = None  # seconds between time points, when the file says

    @property
    def has_time(self) -> bool:
        return "T" in self.axes

    @property
    def has_channels(self) -> bool:
        """Channels that are not RGB colour: a C axis."""
        return "C" in self.axes

    def as_stack(self) -> LoadedStack:
        """The same data as one (Z, Y, X[, S]) focus stack, for hyperstacks without T or C."""
        if self.has_time or self.has_channels:
            raise InputError(
                f"Axes {self.axes} hold more than one focus stack; fuse them as a hyperstack."
            )
        letters = "ZYX" + ("S" if "S" in self.axes else "")
        order = [self.axes.index(a) for a in letters]
        data = _ordered(self.data, order)
        return LoadedStack(
            data=data,
            axes=letters,
            sources=self.sources,
            z_spacing=self.z_spacing,
            pixel_size=self.pixel_size,
            unit=self.unit,
        )


def read_hyperstack(inputs: Sequence[str | Path], axes: str | None = None) -> Hyperstack:
    """Open a TIFF with all its axes (time points, channels), a folder of planes or plane files.

    The axes come from the file (ImageJ hyperstack or OME metadata); ``axes`` (e.g. "TZCYX")
    names them instead, one letter per axis of the file's array, with or without its axes of
    length one. Unlike :func:`read_stack`, T and C axes are kept, for
    :func:`napari_pdmfuse.hyperstack.fuse_hyperstack_iter`.
    """
    paths = _checked_paths(inputs)
    path = paths[0]
    if len(paths) == 1 and is_zarr_store(path):
        return _read_zarr(path, axes)
    if len(paths) > 1 or path.is_dir() or not is_tiff(path):
        stack = read_stack(paths)
        data, file_axes = stack.data, stack.axes
        if "S" in file_axes and not stack.rgb:
            file_axes = file_axes.replace("S", "C")  # e.g. grey + alpha: two channels
        if axes is not None:
            file_axes = _named_axes(path, data.shape, axes)
        return Hyperstack(
            data=data,
            axes=file_axes,
            sources=stack.sources,
            z_spacing=stack.z_spacing,
            pixel_size=stack.pixel_size,
            unit=stack.unit,
        )
    opened = _open_tiff(path, planes_together=True)
    try:
        if axes is None:
            data, file_axes = _file_axes(opened, path)
        else:
            data, file_axes = _given_axes(opened, path, axes)
    except InputError:
        if opened.damaged:  # e.g. a truncated file that lost its last pages: say so
            raise _unreadable(path) from None
        raise
    if opened.damaged:
        warnings.warn(_damaged(path), stacklevel=2)
    names = opened.channel_names
    if names is not None and len(names) != _length(data, file_axes, "C"):
        names = None
    scale = opened.scale
    return Hyperstack(
        data=data,
        axes=file_axes,
        sources=(path,),
        z_spacing=scale.z_spacing,
        pixel_size=scale.pixel_size,
        unit=scale.unit,
        channel_names=names,
        time_interval=scale.time_interval,
    )


def _length(data: da.Array, axes: str, letter: str) -> int:
    return int(data.shape[axes.index(letter)]) if letter in axes else 0


def _named_axes(path: Path, shape: tuple[int, ...], axes: str) -> str:
    """``axes`` upper-cased, if it names each of the ``shape``'s axes with a known letter."""
    letters = axes.upper()
    unknown = sorted({a for a in letters if a not in HYPERSTACK_AXES})
    if unknown or len(set(letters)) != len(letters):
        raise InputError(
            f"The axes {axes!r} must name each axis once with the letters T, Z, C, S, Y and X, "
            "e.g. TZCYX."
        )
    if len(letters) != len(shape):
        raise InputError(
            f"The axes {axes!r} name {len(letters)} axes but {path} has {len(shape)} (shape "
            f"{tuple(int(n) for n in shape)}); give one letter per axis."
        )
    return letters


def _given_axes(opened: _Opened, path: Path, axes: str) -> tuple[da.Array, str]:
    """The file's array with the axes the user named, its axes of length one kept if named
    (all of the file's axes, or those whose letters appear in ``axes``)."""
    data = opened.data
    letters = axes.upper()
    if len(letters) != data.ndim:
        full = list(zip(opened.full_axes, opened.full_shape, strict=True))
        named = [(a, n) for a, n in full if n != 1 or a in letters]
        if "".join(a for a, _ in named) == letters:  # the file's axes, with named singletons
            data = data.reshape(tuple(n for _, n in named))
    return data, _named_axes(path, data.shape, axes)


def _file_axes(opened: _Opened, path: Path) -> tuple[da.Array, str]:
    """The file's array and its axes in the letters T Z C S Y X, or a one-sentence refusal."""
    data, axes = _squeeze(opened.data, opened.axes)
    if "Y" not in axes or "X" not in axes:
        raise _unreadable(path)
    if "S" in axes and data.shape[axes.index("S")] not in (3, 4) and "C" not in axes:
        axes = axes.replace("S", "C")  # extra samples that are not RGB(A): channels
    extra = [a for a in axes if a not in "YXS"]
    _require_planes(path, extra, opened.n_series)
    if "Z" not in axes:
        generic = [a for a in extra if a in GENERIC_PLANE_AXES]
        if generic and len(extra) == 1:
            axes = axes.replace(generic[0], "Z")  # unlabelled pages: the focal planes
        elif not generic:
            raise InputError(
                f"{path} has axes {axes} but none is Z; name the focal-plane axis (--axes on the "
                "command line, e.g. --axes ZYX), or save the planes as a Z stack."
            )
    sizes = zip(axes, data.shape, strict=True)
    unknown = [f"{a}={n}" for a, n in sizes if a not in HYPERSTACK_AXES]
    if unknown:
        raise InputError(
            f"{path} has axes {axes}, and pdmfuse cannot tell which is time, focus or channels "
            f"({', '.join(unknown)}); name every axis (--axes on the command line, e.g. "
            "--axes TZCYX)."
        )
    return data, axes


# ---------------------------------------------------------------------------------------------
# Helpers shared by the readers


def natural_key(name: str) -> list[Any]:
    """Sort key that puts z2 before z10, as microscope software numbers planes."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


def is_tiff(path: Path) -> bool:
    """Whether ``path`` starts like a TIFF/BigTIFF, whatever its name says."""
    try:
        with path.open("rb") as handle:
            return handle.read(4) in TIFF_MAGIC
    except OSError as exc:
        raise ReadError(f"Cannot open {path} ({exc.strerror}); check its permissions.") from None


def _folder_images(folder: Path) -> list[Path]:
    try:
        entries = list(folder.iterdir())
    except OSError as exc:
        raise ReadError(
            f"Cannot list folder {folder} ({exc.strerror}); check its permissions."
        ) from None
    images = [
        p
        for p in entries
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()
    ]
    if not images:
        raise InputError(
            f"The folder {folder} contains no images ({', '.join(IMAGE_SUFFIXES)}); point to the "
            "folder that holds the focal planes."
        )
    return sorted(images, key=lambda p: natural_key(p.name))


def _require_planes(path: Path, extra: list[str], n_series: int) -> None:
    """Refuse a file with no axis beyond Y, X and samples: it holds no stack of planes."""
    if extra:
        return
    if n_series > 1:
        raise InputError(
            f"The pages of {path} differ in size or type, so they do not form one stack; save "
            "the focal planes with one size and data type."
        )
    raise InputError(
        f"{path} holds a single 2-D image, not a stack; give the file with all focal planes, "
        "or several plane files."
    )


def _unreadable(path: Path) -> ReadError:
    return ReadError(
        f"{path} is not a readable image (damaged, truncated or not an image file); check the "
        "file or export it again."
    )


class _Messages(logging.Handler):
    """Collects what tifffile logs, so that it reaches the user as one clear line, not as log
    noise on stderr (a handler here also keeps logging's last-resort printer quiet)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_messages() -> Iterator[list[str]]:
    handler = _Messages()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def _damaged(path: Path) -> PdmFuseWarning:
    return PdmFuseWarning(
        f"{path} has damaged TIFF tags or pages that were skipped; check the fused result, or "
        "export the stack again."
    )


class _GuardedArray:
    """Array-like over one file that turns decoding failures into a ReadError naming the file.

    Data are decoded only when the fusion reads a tile, long after opening succeeded, so a
    damaged tile would otherwise surface as a library traceback in the middle of a run.
    ``dataset`` says that ``array`` is that array of the zarr store at ``path`` ("" for the
    store itself), so that cluster workers can open it again.
    """

    def __init__(self, array: Any, path: Path, dataset: str | None = None) -> None:
        self.array = array
        self.path = path
        self.dataset = dataset
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype).newbyteorder("=")  # big-endian files read as native
        self.ndim = len(self.shape)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle a memory map as its file and layout, not its pixels (for cluster workers)."""
        where = self.path.resolve()  # a worker's working folder may be another
        if self.dataset is not None:
            return (_reopen_zarr, (where, self.path, self.dataset))
        array = self.array
        if isinstance(array, np.memmap) and array.filename is not None:
            layout = (array.filename, array.dtype.str, array.offset, array.shape)
            return (_reopen_memmap, (*layout, self.path))
        return (_reopen_tiff_store, (where, self.path))  # tifffile's zarr store holds open files

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            with _tifffile_messages():
                block = self.array[key]
            # Copy out of a memory map: a read-only file view must not reach code that writes.
            if isinstance(block, np.memmap):
                return np.array(block, dtype=self.dtype)
            return np.asarray(block, dtype=self.dtype)
        except PdmFuseError:
            raise
        except Exception:
            raise _unreadable(self.path) from None


def _reopen_memmap(
    filename: str, dtype: str, offset: int, shape: tuple[int, ...], path: Path
) -> _GuardedArray:
    array = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset, shape=shape)
    return _GuardedArray(array, path)


def _reopen_tiff_store(where: Path, path: Path) -> _GuardedArray:
    """The file at ``where`` (absolute), again, for messages naming ``path`` as typed."""
    try:
        with tifffile.TiffFile(where) as tif:
            array = zarr.open(tif.aszarr(series=0, level=0, squeeze=True), mode="r")
    except Exception:
        raise _unreadable(path) from None
    return _GuardedArray(array, path)


def _reopen_zarr(where: Path, path: Path, dataset: str) -> _GuardedArray:
    try:
        node = zarr.open(str(where), mode="r")
        array = node[dataset] if dataset else node
    except Exception:
        raise _unreadable(path) from None
    return _GuardedArray(array, path, dataset)


def _lazy(guarded: _GuardedArray, chunks: Any) -> da.Array:
    key = (str(guarded.path.resolve()), guarded.dataset, guarded.shape, str(chunks))
    name = f"pdmfuse-read-{dask.base.tokenize(*key)}"
    return da.from_array(guarded, chunks=chunks, name=name, asarray=False)


# ---------------------------------------------------------------------------------------------
# TIFF


@dataclass(frozen=True)
class _Scale:
    z_spacing: float | None = None
    pixel_size: tuple[float, float] | None = None
    unit: str | None = None
    time_interval: float | None = None  # seconds between time points


#: Time units as ImageJ and OME write them, to seconds.
_SECONDS = {
    **dict.fromkeys(("s", "sec", "second", "seconds"), 1.0),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 1e-3),
    **dict.fromkeys(("min", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hour", "hours"), 3600.0),
}


def _seconds(value: object, unit: object) -> float | None:
    """A time step in seconds, or None when it is missing, not positive or in unknown units."""
    factor = _SECONDS.get(str(unit).strip().lower())
    if not isinstance(value, (int, float)) or value <= 0 or factor is None:
        return None
    return float(value) * factor


#: Side, in px, of the blocks a lazy stack is read in on Y and X.
BLOCK = 512

#: Largest chunk when focal planes are grouped: where dask cannot narrow a read to the window
#: (channels moved last, a channel picked), a chunk is decoded whole, and strips as wide as the
#: image make large chunks.
GROUPED_BYTES = 64 * 2**20


def _read_chunks(
    chunks: tuple[int, ...],
    axes: str,
    shape: tuple[int, ...],
    itemsize: int,
    planes_together: bool,
) -> tuple[int, ...]:
    """Dask chunks for a file whose own chunks are ``chunks``: whole file chunks grouped into
    blocks of about BLOCK px on Y and X, all samples of a pixel together, and with
    ``planes_together`` as many focal planes as fit GROUPED_BYTES (all, for tiled files).

    Fusing reads every plane of a tile's window and each dask chunk costs a task, so grouping
    the planes reads a 30 × 700² window in 0.07 s instead of 0.3 s. Viewing reads one plane at
    a time, so a viewer keeps one plane per chunk.
    """

    def chunk(axis: str, own: int, length: int) -> int:
        if axis == "S":
            return length
        if axis in "YX":
            return min(length, own * -(-BLOCK // own))
        return own

    out = list(map(chunk, axes, chunks, shape))
    if planes_together:
        others = [c for a, c in zip(axes, out, strict=True) if a not in PLANE_AXES]
        plane = itemsize * int(np.prod(others))
        for i, (axis, own) in enumerate(zip(axes, chunks, strict=True)):
            if axis in PLANE_AXES:
                out[i] = min(shape[i], max(own, GROUPED_BYTES // plane // own * own))
    return tuple(out)


@dataclass(frozen=True)
class _Opened:
    """The first series of a TIFF, opened lazily with length-one axes squeezed out.

    ``full_shape`` and ``full_axes`` are the series before squeezing; ``damaged`` says tifffile
    had to skip broken tags or pages to open the file.
    """

    data: da.Array
    axes: str
    scale: _Scale
    n_series: int
    damaged: bool
    full_shape: tuple[int, ...]
    full_axes: str
    channel_names: tuple[str, ...] | None = None


def _open_tiff(path: Path, planes_together: bool = False) -> _Opened:
    """Open the first series of a TIFF lazily, with its scale and channel names.

    Tiled, striped or compressed data go through tifffile's zarr store in blocks of the file's
    own chunks. Uncompressed contiguous data (what ImageJ writes) would be one chunk per plane
    there, so every tile of the fusion would decode whole planes; they are memory-mapped
    instead, which reads only the rows and columns a tile needs. ``planes_together`` groups the
    focal planes in chunks, for fusing (see :func:`_read_chunks`).
    """
    try:
        with _tifffile_messages() as messages, tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes = series.get_axes(True)
            full_axes = series.get_axes(False)
            full_shape = tuple(int(n) for n in series.get_shape(False))
            scale = _tiff_scale(tif)
            n_series = len(tif.series)
            names = _channel_names(tif, full_axes, full_shape)
            if series.dataoffset is not None and not series.is_multifile:
                array: Any = np.memmap(
                    path,
                    dtype=np.dtype(tif.byteorder + series.dtype.char),
                    mode="r",
                    offset=series.dataoffset,
                    shape=series.get_shape(True),
                )
                chunks: Any = _read_chunks(
                    (1,) * array.ndim, axes, array.shape, array.dtype.itemsize, planes_together
                )
            else:
                store = tif.aszarr(series=0, level=0, squeeze=True)
                array = zarr.open(store, mode="r")
                chunks = (
                    _read_chunks(
                        array.chunks, axes, array.shape, array.dtype.itemsize, planes_together
                    )
                    if isinstance(array, zarr.Array)
                    else None
                )
    except PdmFuseError:
        raise
    except Exception:
        raise _unreadable(path) from None
    if chunks is None or len(array.shape) != len(axes):
        raise _unreadable(path)
    if 0 in array.shape:
        raise _unreadable(path)  # no valid TIFF has an empty axis
    _check_dtype(path, np.dtype(array.dtype))
    return _Opened(
        data=_lazy(_GuardedArray(array, path), chunks),
        axes=axes,
        scale=scale,
        n_series=n_series,
        damaged=bool(messages),
        full_shape=full_shape,
        full_axes=full_axes,
        channel_names=names,
    )


def _channel_names(
    tif: tifffile.TiffFile, axes: str, shape: tuple[int, ...]
) -> tuple[str, ...] | None:
    """Channel names from OME (``Channel/@Name``) or ImageJ (slice labels that are the same for
    every plane of a channel), one per channel of the C axis; None when the file has none."""
    if "C" not in axes:
        return None
    n_channels = shape[axes.index("C")]
    names: list[object] = []
    try:
        if tif.is_ome and tif.ome_metadata:
            image = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]
            channels = (image[0] if isinstance(image, list) else image)["Pixels"].get("Channel")
            channels = channels if isinstance(channels, list) else [channels]
            names = [c.get("Name") if isinstance(c, dict) else None for c in channels]
        elif tif.is_imagej:
            labels = (tif.imagej_metadata or {}).get("Labels")
            planes = [n for a, n in zip(axes, shape, strict=True) if a not in "YXS"]
            if isinstance(labels, list) and len(labels) == int(np.prod(planes)):
                grid = np.array(labels, dtype=object).reshape(planes)
                grid = np.moveaxis(grid, [a for a in axes if a not in "YXS"].index("C"), -1)
                per_channel = grid.reshape(-1, n_channels)
                if (per_channel == per_channel[0]).all():
                    names = list(per_channel[0])
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
    if len(names) != n_channels or not all(isinstance(n, str) and n.strip() for n in names):
        return None
    return tuple(str(n) for n in names)


def _check_dtype(path: Path, dtype: np.dtype) -> None:
    """Refuse data types no method can fuse (bool, complex, ...) while the file is known."""
    if dtype.kind not in "uif":
        raise InputError(
            f"{path} holds {dtype} data, which cannot be fused; save the planes as an integer or "
            "float image."
        )


def _read_tiff_stack(path: Path) -> LoadedStack:
    opened = _open_tiff(path)
    scale = opened.scale
    try:
        data, axes = _to_z_first(opened.data, opened.axes, path, opened.n_series)
    except InputError:
        if opened.damaged:  # e.g. a truncated file that lost its last pages: not "one plane"
            raise _unreadable(path) from None
        raise
    if opened.damaged:
        warnings.warn(_damaged(path), stacklevel=3)
    return LoadedStack(
        data=data,
        axes=axes,
        sources=(path,),
        z_spacing=scale.z_spacing,
        pixel_size=scale.pixel_size,
        unit=scale.unit,
    )


def _squeeze(data: da.Array, axes: str) -> tuple[da.Array, str]:
    """Drop axes of length one (a single channel or time point), keeping Y and X."""
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape, strict=True)) if n > 1 or a in "YX"]
    data = data[tuple(slice(None) if i in keep else 0 for i in range(len(axes)))]
    return data, "".join(axes[i] for i in keep)


def _to_z_first(data: da.Array, axes: str, path: Path, n_series: int) -> tuple[da.Array, str]:
    """Squeeze singleton axes and order the rest (Z, Y, X[, S|C])."""
    data, axes = _squeeze(data, axes)
    extra = [a for a in axes if a not in "YXS"]
    if "Y" not in axes or "X" not in axes:
        raise _unreadable(path)
    _require_planes(path, extra, n_series)
    if "Z" in extra:
        z = "Z"
    elif extra[0] in GENERIC_PLANE_AXES:
        z = extra[0]
    else:
        raise InputError(
            f"{path} has axes {axes} but none is Z; save the focal planes as a Z stack "
            "(in ImageJ, Image > Hyperstacks > Re-order Hyperstack)."
        )
    rest = [a for a in extra if a != z]
    if rest == ["C"] and "S" not in axes:
        order = [axes.index(z), axes.index("Y"), axes.index("X"), axes.index("C")]
        return _ordered(data, order), "ZYXC"
    if rest:
        dims = ", ".join(f"{a}={data.shape[axes.index(a)]}" for a in rest)
        raise InputError(
            f"{path} has more axes than Z, Y, X and colour ({dims}); save one focus stack per "
            "file, e.g. one time point or channel."
        )
    order = [axes.index(z), axes.index("Y"), axes.index("X")]
    if "S" in axes:
        order.append(axes.index("S"))
    return _ordered(data, order), "ZYX" + ("S" if "S" in axes else "")


def _ordered(data: da.Array, order: list[int]) -> da.Array:
    """``data`` with its axes in ``order``, untouched when already so: dask narrows a read to
    the part asked for only through plain slicing, not through a transpose, even a no-op."""
    return data if order == list(range(len(order))) else data.transpose(order)


def _unit(name: object) -> tuple[str | None, float]:
    """Normalised unit name and factor to micrometres (1 for unknown units, kept as given)."""
    if not isinstance(name, str) or not name.strip():
        return None, 1.0
    text = name.strip().encode().decode("unicode_escape") if "\\u" in name else name.strip()
    key = text.lower()
    if key in _UNIT_NAMES:
        return "um", 1.0
    if key in _UNIT_SCALE_TO_UM:
        return "um", _UNIT_SCALE_TO_UM[key]
    if key in ("pixel", "pixels", "px"):
        return None, 1.0
    return text, 1.0


def _tiff_scale(tif: tifffile.TiffFile) -> _Scale:
    pixels = _ome_pixels(tif.ome_metadata) if tif.is_ome and tif.ome_metadata else None
    if pixels is not None:
        scale = _ome_scale(pixels)
        if scale is not None:
            return scale
    page = tif.pages.first
    tags = page.tags
    pixel: tuple[float, float] | None = None
    unit: str | None = None
    factor = 1.0
    meta = tif.imagej_metadata or {}
    if tif.is_imagej:
        unit, factor = _unit(meta.get("unit"))
    else:
        # Inches (the TIFF default) mean a desktop image's dots per inch, not a microscope's scale.
        resunit = tags.valueof("ResolutionUnit")
        unit, factor = {3: ("um", 1e4), 4: ("um", 1e3), 5: ("um", 1.0)}.get(
            int(resunit or 0), (None, 1.0)
        )
    xres, yres = tags.valueof("XResolution"), tags.valueof("YResolution")
    if unit is not None and xres and yres:
        px, py = (_ratio(r) for r in (xres, yres))
        if px and py:
            pixel = (factor / py, factor / px)
    spacing = meta.get("spacing")
    z_spacing = float(spacing) * factor if isinstance(spacing, (int, float)) and spacing else None
    if pixel is None and z_spacing is None:
        unit = None
    if pixels is not None:
        interval = _ome_interval(pixels)
    else:
        interval = _seconds(meta.get("finterval"), meta.get("tunit", "sec"))
    return _Scale(z_spacing=z_spacing, pixel_size=pixel, unit=unit, time_interval=interval)


def _ratio(value: object) -> float | None:
    if isinstance(value, tuple) and len(value) == 2:
        return value[0] / value[1] if value[1] else None
    return float(value) if isinstance(value, (int, float)) else None


def _ome_pixels(xml: str) -> dict[str, Any] | None:
    """The first image's Pixels element of OME-XML, as a dict, or None."""
    try:
        image = tifffile.xml2dict(xml)["OME"]["Image"]
        pixels = (image[0] if isinstance(image, list) else image)["Pixels"]
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return pixels if isinstance(pixels, dict) else None


def _ome_scale(pixels: dict[str, Any]) -> _Scale | None:
    """Physical sizes (and the time step) from OME Pixels, or None if it gives no size."""

    def size(axis: str) -> float | None:
        value = pixels.get(f"PhysicalSize{axis}")
        if not isinstance(value, (int, float)) or value <= 0:
            return None
        _, factor = _unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        return float(value) * factor

    x, y, z = size("X"), size("Y"), size("Z")
    pixel = (y, x) if x and y else None
    if pixel is None and z is None:
        return None
    return _Scale(z_spacing=z, pixel_size=pixel, unit="um", time_interval=_ome_interval(pixels))


def _ome_interval(pixels: dict[str, Any]) -> float | None:
    return _seconds(pixels.get("TimeIncrement"), pixels.get("TimeIncrementUnit", "s"))


# ---------------------------------------------------------------------------------------------
# Planes in separate files


def _read_plane(path: Path) -> tuple[da.Array, _Scale]:
    """Open one plane file lazily; a TIFF must hold exactly one (grey or RGB) plane."""
    if is_tiff(path):
        opened = _open_tiff(path)
        data, axes = _squeeze(opened.data, opened.axes)
        scale, damaged = opened.scale, opened.damaged
        if axes not in ("YX", "YXS"):
            if damaged:
                raise _unreadable(path)
            raise InputError(
                f"{path} holds a stack of shape {data.shape}, not one plane; give it on its own "
                "or export its planes as separate files."
            )
        if damaged:
            warnings.warn(_damaged(path), stacklevel=3)
        return data, scale
    try:
        import imageio.v3 as iio

        props = iio.improps(path, plugin="pillow")
    except Exception:
        raise _unreadable(path) from None
    if props.is_batch or len(props.shape) not in (2, 3):
        raise InputError(
            f"{path} holds several images (shape {props.shape}), not one plane; export each "
            "focal plane as its own file."
        )
    _check_dtype(path, np.dtype(props.dtype))
    plane = dask.delayed(_decode)(path, props.shape, props.dtype)
    return da.from_delayed(plane, shape=props.shape, dtype=props.dtype), _Scale()


def _decode(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    import imageio.v3 as iio

    try:
        plane = np.asarray(iio.imread(path, plugin="pillow"))
    except Exception:
        raise _unreadable(path) from None
    if plane.shape != tuple(shape) or plane.dtype != dtype:
        raise ReadError(f"{path} changed while it was being read; fuse it again.")
    return plane


def _read_planes(paths: list[Path]) -> LoadedStack:
    planes = []
    first: tuple[Path, da.Array, _Scale] | None = None
    for path in paths:
        plane, scale = _read_plane(path)
        if first is None:
            first = (path, plane, scale)
        elif plane.shape != first[1].shape or plane.dtype != first[1].dtype:
            raise InputError(
                f"{path} is {_describe(plane)} but {first[0]} is {_describe(first[1])}; every "
                "focal plane must have the same size and type."
            )
        planes.append(plane)
    assert first is not None
    if len(planes) < 2:
        raise InputError(
            f"{first[0]} is a single 2-D image, not a stack; give a multi-page TIFF, a folder of "
            "planes or at least two plane files."
        )
    data = da.stack(planes)
    scale = first[2]
    return LoadedStack(
        data=data,
        axes="ZYXS" if data.ndim == 4 else "ZYX",
        sources=tuple(paths),
        pixel_size=scale.pixel_size,
        unit=scale.unit,
    )


def _describe(plane: da.Array) -> str:
    size = "×".join(str(n) for n in plane.shape)
    return f"{size} {plane.dtype}"
