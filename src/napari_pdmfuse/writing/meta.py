"""What every output records besides its pixels, and the one interface every writer offers.

The same facts (axes, pixel size, time step, channel names, image name, what the values are,
how the image was made) are spelt differently by each format: NGFF attributes, OME-XML, ImageJ's
hyperstack metadata. They are gathered once here in :class:`OutputMeta`, with the spellings
shared by several writers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..errors import printable

#: Order of the axes of every output array; an output's axes are a subset of it.
OUTPUT_AXES = "TCYXS"

#: Bytes a TIFF may hold before it needs BigTIFF, which ImageJ cannot read.
CLASSIC_TIFF_BYTES = 2**32 - 2**25

#: Data types ImageJ opens natively; anything else is written as an OME-TIFF.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))

#: Data types OME-XML has a pixel type for: not 64-bit integers, not 16-bit floats.
OME_DTYPES = tuple(np.dtype(t) for t in ("i1", "i2", "i4", "u1", "u2", "u4", "f4", "f8"))

#: Units of length as OME-XML spells them, by the names images carry.
OME_UNITS = {"um": "µm", "µm": "µm", "micron": "µm", "nm": "nm", "mm": "mm", "m": "m"}

#: Channel colours (RRGGBB): two channels as green and magenta, which colour-blind viewers can
#: tell apart; three or more as the usual fluorescence sequence.
TWO_COLOURS = ("00FF00", "FF00FF")
COLOURS = ("FF0000", "00FF00", "0000FF", "FF00FF", "00FFFF", "FFFF00", "FFFFFF")
SAMPLE_COLOURS = ("FF0000", "00FF00", "0000FF", "FFFFFF")
SAMPLE_NAMES = ("Red", "Green", "Blue", "Alpha")

#: Namespace of the OME MapAnnotation holding what the values are and how they were made, so a
#: script (or OMERO) can tell it from other key-value pairs.
ANNOTATION_NAMESPACE = "napari-pdmfuse"


@dataclass(frozen=True)
class OutputMeta:
    """Everything an output records about its pixels, whatever its format."""

    pixel_size: tuple[float, float] | None = None  # (y, x) in `unit`
    unit: str | None = None  # "um" for micrometres
    time_interval: float | None = None  # seconds
    channel_names: tuple[str, ...] | None = None  # one per C
    name: str | None = None  # the image's name
    values: str | None = None  # None (a fused image), "focus position", "confidence", …
    value_unit: str | None = None  # "slice", "micrometer", "0 to 1", …
    # How the image was made (method, weights' SHA-256, package version, …), so that a result
    # opened months later in Fiji, QuPath or OMERO can be traced and made again.
    fusion: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        # Names come from file names, which may hold bytes no metadata encoding accepts (see
        # printable); they are recorded as they would be printed.
        if self.name is not None:
            object.__setattr__(self, "name", printable(self.name))
        if self.channel_names is not None:
            names = tuple(printable(n) for n in self.channel_names)
            object.__setattr__(self, "channel_names", names)

    def describe(self) -> str | None:
        """What the pixels are, for a person reading the file's description: e.g.
        "focus position, micrometer"; None for a fused image."""
        if self.values is None:
            return None
        return self.values if self.value_unit is None else f"{self.values}, {self.value_unit}"

    def record(self) -> dict[str, str]:
        """What the values are and how they were made, as key-value pairs: the entries of an
        OME MapAnnotation and of ImageJ's Properties."""
        pairs = {"values": self.values, "unit": self.value_unit} if self.values else {}
        pairs |= dict(self.fusion or {})
        return {k: str(v) for k, v in pairs.items() if v is not None}

    def names(self, n_channels: int) -> list[str] | None:
        """The channel names when there is one per channel."""
        names = self.channel_names
        return list(names) if names is not None and len(names) == n_channels else None


class Pixels(Protocol):
    """An output being written tile by tile, in any order."""

    def write(self, lead: tuple[int, ...], y: int, x: int, values: np.ndarray) -> None:
        """values (h, w) — or (h, w, S) when the axes end in S — at [*lead, y:y+h, x:x+w];
        lead indexes the axes before Y (T and/or C), in order."""

    def finish(self) -> None:
        """Complete the output (pyramids, metadata) once every tile is in."""

    def close(self) -> None:
        """Release files and scratch space; safe to call twice, after a failure too."""


def check_axes(axes: str, shape: Sequence[int]) -> None:
    """Refuse axes that are not an in-order subset of T C Y X S (with Y and X) fitting shape."""
    order = [OUTPUT_AXES.find(a) for a in axes]
    if (
        len(axes) != len(shape)
        or -1 in order
        or order != sorted(set(order))
        or "YX" not in axes
        or ("C" in axes and "S" in axes)
        or ("S" in axes and shape[-1] not in (3, 4))
    ):
        raise ValueError(f"output axes {axes!r} do not fit shape {tuple(shape)}")


def native(dtype: np.dtype) -> np.dtype:
    """``dtype`` in this machine's byte order, spelt the way every library recognises.

    numpy has two spellings of 64-bit integers (``long`` and ``long long``) that compare equal
    but that zarr tells apart, and big-endian TIFFs give big-endian types; outputs are written
    in the one canonical native type.
    """
    return np.dtype(np.dtype(dtype).newbyteorder("=").str)


def software() -> str:
    from ..version import __version__

    return f"napari-pdmfuse {__version__}"


def ome_metadata(axes: str, shape: Sequence[int], meta: OutputMeta) -> dict[str, object]:
    """tifffile's OME-XML metadata: axes, physical sizes, time step, channel names, image name,
    what a map's values are (as the Description) and, as key-value pairs in a MapAnnotation
    that Fiji, QuPath and OMERO show, what the values are and how the image was made."""
    metadata: dict[str, object] = {"axes": axes}
    if meta.name:
        metadata["Name"] = meta.name
    unit = OME_UNITS.get(meta.unit or "")
    if meta.pixel_size is not None and unit is not None:
        py, px = meta.pixel_size
        metadata.update(
            PhysicalSizeX=px, PhysicalSizeXUnit=unit, PhysicalSizeY=py, PhysicalSizeYUnit=unit
        )
    if meta.time_interval and "T" in axes:
        metadata.update(TimeIncrement=meta.time_interval, TimeIncrementUnit="s")
    names = meta.names(shape[axes.index("C")]) if "C" in axes else None
    if names is None and "C" not in axes and "S" not in axes and meta.values:
        names = [meta.values]  # a map's one channel is named by what it holds
    if names is not None:
        metadata["Channel"] = {"Name": names}
    description = meta.describe()
    if description is not None:
        metadata["Description"] = description
    pairs = meta.record()
    if pairs:
        metadata["MapAnnotation"] = {"Namespace": ANNOTATION_NAMESPACE, "Value": pairs}
    return metadata


def imagej_metadata(axes: str, shape: Sequence[int], meta: OutputMeta) -> dict[str, object]:
    """tifffile's ImageJ hyperstack metadata (axes already in ImageJ's T C Y X S order): unit,
    frame interval, channel names as slice labels, and the image name, what the values are and
    how the image was made as Info text and Properties, which ImageJ shows under Image › Show
    Info."""
    metadata: dict[str, object] = {"axes": axes}
    if meta.pixel_size is not None and meta.unit:
        metadata["unit"] = meta.unit
    if meta.time_interval and "T" in axes:
        metadata.update(finterval=meta.time_interval, tunit="sec")
    if "C" in axes:
        n_channels = shape[axes.index("C")]
        names = meta.names(n_channels)
        if names is not None:
            pages = int(np.prod([n for a, n in zip(axes, shape, strict=True) if a in "TC"]))
            # One label per page; ImageJ's pages run through C fastest, then T.
            metadata["Labels"] = [names[i % n_channels] for i in range(pages)]
    properties = {"Name": meta.name, "Values": meta.values, "ValueUnit": meta.value_unit}
    properties = {k: v for k, v in properties.items() if v} | dict(meta.fusion or {})
    if properties:
        metadata["Properties"] = properties
        metadata["Info"] = "\n".join(f"{k}: {v}" for k, v in properties.items())
    return metadata


def imagej_resolution(meta: OutputMeta) -> dict[str, object]:
    """The resolution tags ImageJ reads its pixel size from (pixels per `unit`)."""
    if meta.pixel_size is None or not meta.unit:
        return {}
    py, px = meta.pixel_size
    return {"resolution": (1 / px, 1 / py)}


#: Units of length in centimetres, for the TIFF resolution tags of a plain TIFF.
CENTIMETRES = {"um": 1e-4, "µm": 1e-4, "micron": 1e-4, "nm": 1e-7, "mm": 0.1, "m": 100.0}


def json_metadata(axes: str, meta: OutputMeta) -> dict[str, object]:
    """tifffile's JSON description, for the pixel types that neither ImageJ nor OME-XML holds
    (64-bit integers, 16-bit floats): the axes, which tifffile reads back, and everything the
    other formats record."""
    facts: dict[str, object] = {
        "name": meta.name,
        "pixel_size": list(meta.pixel_size) if meta.pixel_size and meta.unit else None,
        "unit": meta.unit if meta.pixel_size else None,
        "time_interval": meta.time_interval if "T" in axes else None,
        "channel_names": list(meta.channel_names) if meta.channel_names else None,
        "values": meta.values,
        "value_unit": meta.value_unit,
        "fusion": dict(meta.fusion) if meta.fusion else None,
    }
    return {"axes": axes} | {k: v for k, v in facts.items() if v is not None}


def tiff_resolution(meta: OutputMeta) -> dict[str, object]:
    """The standard TIFF resolution tags (pixels per centimetre) for the pixel size."""
    per_cm = CENTIMETRES.get(meta.unit or "")
    if meta.pixel_size is None or per_cm is None:
        return {}
    py, px = meta.pixel_size
    return {"resolution": (1 / (px * per_cm), 1 / (py * per_cm)), "resolutionunit": "CENTIMETER"}


def channel_colours(n_channels: int, rgb: bool) -> list[str]:
    """Display colours: red, green, blue (and white alpha) for colour samples, white for a
    single channel, a palette for several."""
    if rgb:
        return list(SAMPLE_COLOURS[:n_channels])
    if n_channels == 1:
        return ["FFFFFF"]
    palette = TWO_COLOURS if n_channels == 2 else COLOURS
    return [palette[i % len(palette)] for i in range(n_channels)]
