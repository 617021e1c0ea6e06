"""One description of an image to fuse, whatever it came from: a file, a folder, an array.

Readers, the command line, the widget and the Python API all hand the fusion an :class:`Image`:
the (lazy) pixels, what each axis holds, and what the file said about them, so metadata are
read in one place and every output can carry them on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .axes import normalise_axes, ordered

#: Name endings dropped from a file or folder name to name the image (longest first).
NAME_SUFFIXES = (
    ".ome.tiff",
    ".ome.tif",
    ".ome.zarr",
    ".tiff",
    ".tif",
    ".zarr",
    ".png",
    ".jpeg",
    ".jpg",
    ".bmp",
    ".czi",
    ".nd2",
    ".lif",
)


def stem(path: Path) -> str:
    """A file or folder name without its (possibly double) suffix: ``a.ome.tif`` → ``a``."""
    name = path.name or path.resolve().name or str(path)  # "." names its folder
    for suffix in NAME_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


@dataclass(frozen=True)
class Image:
    """An image to fuse, not yet decoded when ``data`` is a dask array.

    ``axes`` names each axis of ``data`` in its order with the letters T (time), Z (focal
    planes), C (channels), S (RGB samples), Y and X; it is checked (and upper-cased) by
    :func:`normalise_axes` on construction. Physical sizes are in ``unit`` ("um" for
    micrometres, whatever the file used), ``time_interval`` in seconds; each is None when
    unknown. ``channel_names`` has one name per C channel.
    """

    data: Any
    axes: str
    sources: tuple[Path, ...] = ()
    name: str | None = None
    z_spacing: float | None = None
    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None
    channel_names: tuple[str, ...] | None = None
    time_interval: float | None = None

    def __post_init__(self) -> None:
        sources = tuple(Path(p) for p in self.sources)
        where = str(sources[0]) if len(sources) == 1 else "the data"
        object.__setattr__(self, "sources", sources)
        object.__setattr__(self, "axes", normalise_axes(self.axes, self.data.shape, where))
        if self.channel_names is not None:
            names = tuple(str(n) for n in self.channel_names)
            if len(names) != self.n_channels or "C" not in self.axes:
                raise InputError(
                    f"{len(names)} channel names were given for {where}, which has "
                    f"{self.n_channels if self.has_channels else 'no'} channels; give one name "
                    "per channel."
                )
            object.__setattr__(self, "channel_names", names)

    def _length(self, letter: str) -> int | None:
        return int(self.data.shape[self.axes.index(letter)]) if letter in self.axes else None

    @property
    def has_time(self) -> bool:
        return "T" in self.axes

    @property
    def has_channels(self) -> bool:
        """Channels that are not RGB colour: a C axis."""
        return "C" in self.axes

    @property
    def rgb(self) -> bool:
        """RGB(A) colour: an S axis (of 3 or 4 samples, as :func:`normalise_axes` ensures)."""
        return "S" in self.axes

    @property
    def channel_letter(self) -> str | None:
        """The axis holding colour: "C" (channels), "S" (RGB samples) or None (grey)."""
        return "C" if self.has_channels else "S" if self.rgb else None

    @property
    def n_times(self) -> int | None:
        """Time points, None without a T axis."""
        return self._length("T")

    @property
    def n_planes(self) -> int:
        return int(self.data.shape[self.axes.index("Z")])

    @property
    def n_channels(self) -> int:
        """Channels (C) or colour samples (S); 1 for a grey image."""
        return self._length("C") or self._length("S") or 1

    @property
    def channel_axis(self) -> int | None:
        """Index of the C axis in ``data``, None without channels."""
        return self.axes.index("C") if "C" in self.axes else None

    @property
    def shape_yx(self) -> tuple[int, int]:
        shape = self.data.shape
        return int(shape[self.axes.index("Y")]), int(shape[self.axes.index("X")])

    @property
    def z_step_um(self) -> float | None:
        """The Z step in micrometres, None when the file gave none (or not in a length unit)."""
        return self.z_spacing if self.unit == "um" else None

    def ordered(self, axes: str) -> Image:
        """The same image with its axes in the order ``axes`` (a permutation of its own)."""
        letters = axes.upper()
        if sorted(letters) != sorted(self.axes):
            raise InputError(
                f"Axes {axes!r} are not an order of the image's axes {self.axes}; name each of "
                "them once."
            )
        data = ordered(self.data, [self.axes.index(a) for a in letters])
        return dataclasses.replace(self, data=data, axes=letters)

    def as_stack(self) -> Image:
        """The image as one Z-first focus stack (Z, Y, X, then C or S if any), the layout the
        fusion core reads; refused with a T axis, which holds several stacks."""
        if self.has_time:
            raise InputError(
                f"Axes {self.axes} hold more than one focus stack; fuse them as a hyperstack."
            )
        rest = "C" if self.has_channels else ("S" if self.rgb else "")
        return self.ordered("ZYX" + rest)
