"""OME-Zarr outputs: written tile by tile, then given a multiscale pyramid and NGFF metadata.

A result of any size is written chunk-compressed as tiles arrive; once level 0 is complete, each
coarser level is made from the one above, one output chunk at a time, so memory stays at a few
chunks whatever the number of time points and channels. With the pyramid, napari (or any NGFF
viewer) opens a huge result instantly and loads only what is on screen. NGFF has no axis for
colour samples, so RGB(A) is stored as a channel axis before Y and X, with red, green and blue
display colours, and marked as RGB in the ``pdmfuse`` attributes, beside what the values are
and how the image was made.

OME-Zarr 0.5 (zarr format 3, metadata under ``ome`` in ``zarr.json``) is written by default;
0.4 (zarr format 2) on request, for readers that predate zarr format 3.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .meta import SAMPLE_NAMES, OutputMeta, channel_colours, check_axes

#: The OME-NGFF versions written, the default first, with the zarr format each is stored in.
ZARR_FORMATS = {"0.5": 3, "0.4": 2}
NGFF_VERSIONS = tuple(ZARR_FORMATS)
DEFAULT_NGFF_VERSION = NGFF_VERSIONS[0]

#: Side of a chunk in px, and the size down to which levels are added.
CHUNK = 512

#: NGFF axis types, and units of length as NGFF (UDUNITS-2) spells them.
AXIS_TYPES = {"t": "time", "c": "channel", "y": "space", "x": "space"}
NGFF_UNITS = {"um": "micrometer", "µm": "micrometer", "micron": "micrometer"}
NGFF_UNITS |= {"nm": "nanometer", "mm": "millimeter", "m": "meter"}


def level_shapes(shape_yx: tuple[int, int]) -> list[tuple[int, int]]:
    """Plane shapes of the pyramid: full size, then halved until it fits one chunk."""
    shapes = [shape_yx]
    while max(shapes[-1]) > CHUNK and min(shapes[-1]) >= 2:
        height, width = shapes[-1]
        shapes.append((height // 2, width // 2))
    return shapes


def halve(block: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """2 × 2 means of the last two axes (even sizes), rounded half to even for integer types.

    Integer means are exact in the type itself: a float64 mean rounds 64-bit values (and can
    round the largest past the type's range, where the cast wraps them round), so each quarter
    is summed apart from the remainders.
    """
    *lead, height, width = block.shape
    quads = block.reshape(*lead, height // 2, 2, width // 2, 2)
    if dtype.kind not in "iu":
        return quads.mean(axis=(-3, -1)).astype(dtype)
    quads = quads.astype(dtype, copy=False)
    four = dtype.type(4)
    base = (quads // four).sum(axis=(-3, -1), dtype=dtype)  # within the type's range
    rest = (quads % four).sum(axis=(-3, -1), dtype=np.int8)  # 0 to 12 quarters
    means = base + (rest // 4).astype(dtype)  # same type: uint64 and int8 would mix as float
    quarters = rest % 4
    up = (quarters == 3) | ((quarters == 2) & (means % 2 == 1))
    return means + up.astype(dtype)


def shrink(above: Any, below: Any, dtype: np.dtype) -> None:
    """Fill a pyramid level with the 2 × 2 means of the one above, one output chunk at a time
    (one plane of the axes before Y and X at a time)."""
    *lead, height, width = below.shape
    for index in np.ndindex(*lead):
        for y in range(0, height, CHUNK):
            for x in range(0, width, CHUNK):
                rows, cols = slice(y, min(y + CHUNK, height)), slice(x, min(x + CHUNK, width))
                source = above[(*index, slice(2 * y, 2 * rows.stop), slice(2 * x, 2 * cols.stop))]
                below[(*index, rows, cols)] = halve(np.asarray(source), dtype)


def check_ngff_version(version: str) -> str:
    """Refuse an OME-Zarr version this writer does not write."""
    if version not in ZARR_FORMATS:
        raise InputError(
            f"OME-Zarr version {version!r} cannot be written; choose one of "
            f"{', '.join(NGFF_VERSIONS)}."
        )
    return version


def stored_axes(axes: str) -> str:
    """The axes as stored: colour samples become a channel axis before Y and X."""
    return axes.replace("YXS", "CYX")


class ZarrPixels:
    """One image as an OME-Zarr group with axes from t, c, y, x; level 0 written tile by tile.

    The metadata is written only by :meth:`finish`, so an unfinished store never looks like a
    complete image.
    """

    def __init__(
        self,
        path: Path,
        axes: str,
        shape: tuple[int, ...],
        dtype: np.dtype,
        meta: OutputMeta,
        version: str = DEFAULT_NGFF_VERSION,
    ) -> None:
        import zarr

        check_axes(axes, shape)
        self.version = check_ngff_version(version)
        zarr_format = ZARR_FORMATS[version]
        self.rgb = "S" in axes
        self.axes = stored_axes(axes)
        lead = tuple(shape[: axes.index("Y")]) + ((shape[-1],) if self.rgb else ())
        shape_yx = (shape[axes.index("Y")], shape[axes.index("X")])
        self.dtype, self.meta = np.dtype(dtype), meta
        self.group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
        # NGFF asks for "/"-separated chunk keys in both formats; 0.5 also for each array's
        # dimension names, the axes' names.
        keys = {"name": "v2" if zarr_format == 2 else "default", "separator": "/"}
        layout: dict[str, Any] = {"chunk_key_encoding": keys}
        if zarr_format == 3:
            layout["dimension_names"] = list(self.axes.lower())
        self.levels = [
            self.group.create_array(
                str(level),
                shape=(*lead, height, width),
                chunks=(*(1 for _ in lead), CHUNK, CHUNK),
                dtype=self.dtype,
                fill_value=0,
                **layout,
            )
            for level, (height, width) in enumerate(level_shapes(shape_yx))
        ]
        n_channels = lead[self.axes.index("C")] if "C" in self.axes else 1
        # Display ranges of float images follow the values written (a dtype's range is useless).
        self.low = np.full(n_channels, np.inf)
        self.high = np.full(n_channels, -np.inf)

    def write(self, lead: tuple[int, ...], y: int, x: int, values: np.ndarray) -> None:
        """A tile (h, w) or (h, w, S) at [*lead, y:y+h, x:x+w] of level 0."""
        height, width = values.shape[:2]
        values = values.astype(self.dtype, copy=False)
        where = (*lead, slice(y, y + height), slice(x, x + width))
        if self.rgb:
            values = np.moveaxis(values, -1, 0)
            where = (*lead, slice(None), *where[-2:])
        self.levels[0][where] = values
        if self.dtype.kind == "f" and values.size:
            self._track(lead, values)

    def _track(self, lead: tuple[int, ...], values: np.ndarray) -> None:
        finite = np.where(np.isfinite(values), values, np.nan)
        if np.isnan(finite).all():
            return
        if self.rgb:
            low, high = np.nanmin(finite, axis=(1, 2)), np.nanmax(finite, axis=(1, 2))
            self.low, self.high = np.fmin(self.low, low), np.fmax(self.high, high)
            return
        channel = lead[self.axes.index("C")] if "C" in self.axes else 0
        self.low[channel] = min(self.low[channel], float(np.nanmin(finite)))
        self.high[channel] = max(self.high[channel], float(np.nanmax(finite)))

    def finish(self) -> None:
        """Make every coarser level from the one above, one output chunk at a time, and write
        the NGFF metadata (only now, so an unfinished store never looks complete)."""
        for above, below in zip(self.levels, self.levels[1:], strict=False):
            shrink(above, below, self.dtype)
        ngff = {"multiscales": [self._multiscale()], "omero": self._omero()}
        attributes: dict[str, Any] = (
            ngff if self.version == "0.4" else {"ome": {"version": self.version, **ngff}}
        )
        meta = self.meta
        extra: dict[str, Any] = {"values": meta.values, "unit": meta.value_unit}
        extra |= {"rgb": self.rgb or None, "fusion": dict(meta.fusion) if meta.fusion else None}
        extra = {k: v for k, v in extra.items() if v is not None}
        if extra:
            attributes["pdmfuse"] = extra
        self.group.attrs.update(attributes)

    def close(self) -> None:
        """Nothing is held open: zarr writes each chunk as it goes."""

    def _multiscale(self) -> dict[str, object]:
        meta = self.meta
        space_unit = NGFF_UNITS.get(meta.unit or "")
        axes: list[dict[str, str]] = []
        for letter in self.axes.lower():
            axis = {"name": letter, "type": AXIS_TYPES[letter]}
            if letter in "yx" and space_unit:
                axis["unit"] = space_unit
            if letter == "t" and meta.time_interval:
                axis["unit"] = "second"
            axes.append(axis)
        lead = [1.0] * (len(self.axes) - 2)
        if "T" in self.axes and meta.time_interval:
            lead[0] = float(meta.time_interval)
        size_y, size_x = meta.pixel_size if meta.pixel_size and space_unit else (1.0, 1.0)
        datasets = [
            {
                "path": str(level),
                "coordinateTransformations": [
                    {"type": "scale", "scale": [*lead, size_y * 2**level, size_x * 2**level]}
                ],
            }
            for level in range(len(self.levels))
        ]
        # 0.5 gives the version once, under "ome"; 0.4 in each multiscale.
        multiscale: dict[str, object] = {"version": self.version} if self.version == "0.4" else {}
        multiscale["axes"] = axes
        if meta.name:
            multiscale["name"] = meta.name
        return {**multiscale, "datasets": datasets, "type": "mean"}

    def _omero(self) -> dict[str, object]:
        """Channel labels, colours and display windows, as OMERO and napari show them."""
        n_channels = len(self.low)
        if self.rgb:
            labels = list(SAMPLE_NAMES[:n_channels])
        else:
            default = [f"Channel {c}" for c in range(n_channels)]
            if n_channels == 1 and self.meta.values:
                default = [self.meta.values]
            labels = self.meta.names(n_channels) or default
        colours = channel_colours(n_channels, self.rgb)
        channels = []
        for c in range(n_channels):
            low, high = self._range(c)
            channels.append(
                {
                    "label": labels[c],
                    "color": colours[c],
                    "active": True,
                    "window": {"min": low, "max": high, "start": low, "end": high},
                }
            )
        model = "color" if self.rgb or n_channels > 1 else "greyscale"
        omero: dict[str, object] = {"version": self.version} if self.version == "0.4" else {}
        omero["channels"] = channels
        if self.meta.name:
            omero["name"] = self.meta.name
        return {**omero, "rdefs": {"model": model}}

    def _range(self, channel: int) -> tuple[float, float]:
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            return float(info.min), float(info.max)
        if self.dtype.kind == "b" or self.low[channel] > self.high[channel]:
            return 0.0, 1.0
        low, high = float(self.low[channel]), float(self.high[channel])
        return low, max(high, low + 1)  # a flat image still gets a usable window
