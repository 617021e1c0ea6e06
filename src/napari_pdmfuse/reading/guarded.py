"""Lazy arrays over files that fail with one clear sentence and travel to cluster workers.

Pixels are decoded only when the fusion (or a viewer) asks for a block, long after the file was
opened, so a damaged block would otherwise surface as a library traceback in the middle of a
run. Every block read here goes through :class:`GuardedArray`, which names the file instead, and
which pickles as the file's name and layout (never its pixels) so a dask cluster can reopen it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import tifffile

from ..errors import InputError, PdmFuseError, PdmFuseWarning, ReadError
from ..sizes import MAX_SIDE
from .filearray import FileArray
from .remote import is_url, open_zarr

#: Side, in px, of the blocks a lazy image is read in on Y and X.
BLOCK = 512

#: Largest chunk when focal planes are grouped: where dask cannot narrow a read to the window
#: (channels moved last, a channel picked), a chunk is decoded whole, and strips as wide as the
#: image make large chunks.
GROUPED_BYTES = 64 * 2**20

#: Axes that can hold the focal planes (tifffile's letters for unlabelled pages included).
PLANE_AXES = "ZIQ"


def unreadable(path: Path | str) -> ReadError:
    """A file that cannot be decoded, or a remote store whose chunks stopped arriving."""
    if is_url(path):
        return ReadError(
            f"{path} could not be read (the connection failed or the store is damaged); check "
            "the address and the network, then try again."
        )
    return ReadError(
        f"{path} is not a readable image (damaged, truncated or not an image file); check the "
        "file or export it again."
    )


def damaged(path: Path) -> PdmFuseWarning:
    return PdmFuseWarning(
        f"{path} has damaged TIFF tags or pages that were skipped; check the fused result, or "
        "export the stack again."
    )


def check_dtype(path: Path | str, dtype: np.dtype) -> None:
    """Refuse data types no method can fuse (bool, complex, ...) while the file is known."""
    if dtype.kind not in "uif":
        raise InputError(
            f"{path} holds {dtype} data, which cannot be fused; save the planes as an integer or "
            "float image."
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
def tifffile_messages() -> Iterator[list[str]]:
    """What tifffile logs inside the block (broken tags, skipped pages), kept off stderr."""
    handler = _Messages()
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def location(path: Path | str) -> str:
    """Where a source is, for another process: a local file's absolute path (a worker's working
    folder may be another), or a remote store's address as given."""
    return path if isinstance(path, str) else str(path.resolve())


class GuardedArray:
    """Array-like over one file that turns decoding failures into a ReadError naming the file.

    ``path`` is a local Path, or the address of a remote zarr store as a string. ``dataset``
    says that ``array`` is that array of the zarr store at ``path`` ("" for the store itself),
    and ``reopen`` (a picklable function and its arguments) how to open a vendor file again,
    so that cluster workers can read it.
    """

    def __init__(
        self,
        array: Any,
        path: Path | str,
        dataset: str | None = None,
        reopen: tuple[Any, tuple[Any, ...]] | None = None,
    ) -> None:
        self.array = array
        self.path = path
        self.dataset = dataset
        self.reopen = reopen
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype).newbyteorder("=")  # big-endian files read as native
        self.ndim = len(self.shape)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle a file as its name and layout, not its pixels (for cluster workers)."""
        if self.reopen is not None:
            return self.reopen
        if self.dataset is not None:
            return (_reopen_zarr, (location(self.path), self.path, self.dataset))
        where = Path(location(self.path))
        array = self.array
        if isinstance(array, FileArray):
            return (GuardedArray, (array, self.path))
        return (reopen_tiff_store, (where, self.path))  # tifffile's zarr store holds open files

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            with tifffile_messages():
                block = self.array[key]
            if isinstance(block, da.Array):  # a vendor reader's own lazy array: read it here
                block = block.compute(scheduler="synchronous", callbacks=())  # see read_now
            return np.asarray(block, dtype=self.dtype)
        except PdmFuseError:
            raise
        except Exception:
            raise unreadable(self.path) from None


def reopen_tiff_store(where: Path, path: Path, series: int = 0) -> GuardedArray:
    """The file at ``where`` (absolute), again, for messages naming ``path`` as typed."""
    import zarr  # a fifth of a second to import: only for the inputs that need it

    try:
        with tifffile.TiffFile(where) as tif:
            array = zarr.open(tif.aszarr(series=series, level=0, squeeze=True), mode="r")
    except Exception:
        raise unreadable(path) from None
    reopen = (reopen_tiff_store, (where, path, series)) if series else None
    return GuardedArray(array, path, reopen=reopen)


def _reopen_zarr(where: str, path: Path | str, dataset: str) -> GuardedArray:
    import zarr

    try:
        node = open_zarr(where) if is_url(where) else zarr.open(where, mode="r")
        array = node[dataset] if dataset else node
    except PdmFuseError:
        raise
    except Exception:
        raise unreadable(path) from None
    return GuardedArray(array, path, dataset)


def check_layout(path: Path | str, shape: tuple[int, ...]) -> None:
    """Refuse a file whose header claims a side no image has (a damaged TIFF tag or zarr
    shape), before dask lays out a block per chunk of it (which would exhaust memory)."""
    if any(int(n) > MAX_SIDE for n in shape):
        raise InputError(
            f"{path} claims an array of shape {tuple(shape)}, larger than any image; check the "
            "file or export it again."
        )


def lazy(guarded: GuardedArray, chunks: Any) -> da.Array:
    """A dask array over ``guarded``, named after the file so that two reads of one file share
    their blocks in a graph."""
    check_layout(guarded.path, guarded.shape)
    key = (location(guarded.path), guarded.dataset, guarded.shape, str(chunks))
    name = f"pdmfuse-read-{dask.base.tokenize(*key)}"
    return da.from_array(guarded, chunks=chunks, name=name, asarray=False)


def read_chunks(
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
