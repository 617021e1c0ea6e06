"""Reading an aligned stack window by window, so alignment needs no more memory than a tile.

:func:`.align.apply_transforms` resamples whole planes; a stack larger than memory is instead
read through an :class:`AlignedReader`, which gives any window of the aligned stack from the
part of each source plane its samples land in (plus the reach of the spline), so the fusion
reads tile by tile as it does without alignment. The reader holds only the lazy source and the
transforms, so it can be sent to other processes (dask workers) with the job.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .align import Transform, coverage, image_centre
from .errors import InputError
from .stack import is_lazy, read_now, to_dtype

#: Pixels read beyond where a window's samples land, for each interpolation order. A cubic
#: spline's prefilter reaches every pixel, but its weight falls by 0.268 per pixel: 8 px leave
#: differences from the whole-plane result below 1e-4 of the data range. Linear interpolation
#: needs the next pixel only.
MARGIN = {1: 1, 3: 8}


def _source_span(
    window: range, scale: float, shift: float, centre: float, size: int, margin: int
) -> slice:
    """The source pixels one axis of ``window`` samples through ``scale`` and ``shift``.

    Samples beyond the image repeat its edge pixel, which the spline also needs ``margin`` px
    of the image behind, so a span outside the image keeps that much of its inside.
    """
    first = centre + scale * (window.start - centre) + shift
    last = centre + scale * (window.stop - 1 - centre) + shift
    start = int(np.floor(first)) - margin
    stop = int(np.ceil(last)) + margin + 1
    start = max(0, min(start, size - 1 - margin))
    stop = min(size, max(stop, margin + 1))
    return slice(start, stop)


def _within(inner: tuple[range | slice, ...], outer: tuple[slice, ...]) -> tuple[slice, ...]:
    """``inner`` (image coordinates) in the coordinates of the block read at ``outer``."""
    return tuple(
        slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer, strict=True)
    )


@dataclass(frozen=True)
class AlignedReader:
    """Windows of a (Z, Y, X, C) stack resampled into the reference plane's frame.

    ``window(rows, cols)`` equals the same window of :func:`.align.apply_transforms` on the
    whole stack (up to the spline's truncated reach, see :data:`MARGIN`): the source dtype,
    integers rounded and clipped, edge pixels repeated outside what a plane saw. ``cut`` cuts
    every plane of a source window lazily (e.g. :meth:`.Stack.window`) when plain indexing of
    ``source`` would read more than the window.
    """

    source: Any  # (Z, Y, X, C) numpy or dask array
    transforms: Sequence[Transform]
    order: int = 3
    cut: Callable[[slice, slice], Any] | None = None

    def __post_init__(self) -> None:
        shape = tuple(self.source.shape)
        if len(shape) != 4 or len(self.transforms) != shape[0]:
            raise InputError(
                f"Got {len(self.transforms)} transforms for a stack of shape {shape}; give one "
                "per plane of a (Z, Y, X, C) stack."
            )
        if self.order not in MARGIN:
            raise InputError(f"Interpolation order {self.order} is not supported; use 1 or 3.")
        object.__setattr__(self, "transforms", tuple(self.transforms))

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return tuple(int(n) for n in self.source.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """The (Z, h, w, C) window of the aligned stack, reading only what it samples."""
        z, height, width, channels = self.shape
        span = range(*rows.indices(height)), range(*cols.indices(width))
        out = np.empty((z, len(span[0]), len(span[1]), channels), self.dtype)
        centre = image_centre((height, width))
        for planes in self._groups():
            reads = {k: self._span(k, span) for k in planes}
            union = tuple(
                slice(
                    min(r[a].start for r in reads.values()), max(r[a].stop for r in reads.values())
                )
                for a in (0, 1)
            )
            block = self._read(planes, *union)
            for i, k in enumerate(planes):
                t = self.transforms[k]
                if t == Transform():  # the reference plane: no resampling to do
                    out[k] = block[(i, *_within(span, union))]
                    continue
                read = reads[k]
                values = np.asarray(block[(i, *_within(read, union))], dtype=np.float32)
                # Output pixel p samples the source at scale·(p + origin) + (1 − scale)·centre
                # + shift, the image's own formula, here in the read span's coordinates.
                origin = np.array([span[0].start, span[1].start], dtype=np.float64)
                start = np.array([read[0].start, read[1].start], dtype=np.float64)
                offset = t.scale * origin + (1 - t.scale) * centre + (t.dy, t.dx) - start
                for c in range(channels):
                    resampled = ndimage.affine_transform(
                        values[..., c],
                        np.full(2, t.scale),
                        offset=offset,
                        output_shape=out.shape[1:3],
                        order=self.order,
                        mode="nearest",
                    )
                    out[k, ..., c] = to_dtype(resampled, self.dtype)
        return out

    def coverage(self, rows: slice, cols: slice) -> np.ndarray:
        """(h, w) bool: the window's pixels that every plane saw, as :func:`.align.coverage`."""
        return coverage(self.shape[1:3], self.transforms, rows, cols)

    def _groups(self) -> list[range]:
        """Planes read together: one dask chunk along Z (decoded once), else each alone."""
        z = self.shape[0]
        chunks = getattr(self.source, "chunks", None) if is_lazy(self.source) else None
        if not chunks:
            return [range(k, k + 1) for k in range(z)]
        bounds = np.cumsum((0, *chunks[0]))
        return [range(int(a), int(b)) for a, b in itertools.pairwise(bounds)]

    def _span(self, k: int, window: tuple[range, range]) -> tuple[slice, slice]:
        """The source pixels plane ``k`` needs for ``window``."""
        t, margin = self.transforms[k], MARGIN[self.order]
        _, height, width, _ = self.shape
        centre = image_centre((height, width))
        return (
            _source_span(window[0], t.scale, t.dy, centre[0], height, margin),
            _source_span(window[1], t.scale, t.dx, centre[1], width, margin),
        )

    def _read(self, planes: range, rows: slice, cols: slice) -> np.ndarray:
        """Planes ``planes`` of a source window, read by the calling thread alone."""
        whole = self.cut(rows, cols) if self.cut else self.source[:, rows, cols]
        return read_now(whole[planes.start : planes.stop])
