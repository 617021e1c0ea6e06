"""Microscope vendors' own files (Zeiss CZI, Nikon ND2, Leica LIF, and whatever other bioio
readers are installed), opened lazily through bioio.

Converting a CZI or ND2 to TIFF before fusing loses time and, often, the pixel size and channel
names; reading it directly keeps them on every output. bioio and its format plugins are an
optional extra, so a vendor file is recognised (by its name or its first bytes) even without
them, and the user is told which extra to install rather than that a good file is damaged.
"""

from __future__ import annotations

import importlib
import importlib.util
import numbers
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ReadError
from .axes import file_axes, given_axes, squeeze
from .guarded import GuardedArray, check_dtype, lazy, location, read_chunks, unreadable
from .image import Image, stem
from .scale import Scale, checked, seconds
from .scenes import SINGLE, Scene, checked_index, scenes_named, warn_first_only

FORMATS_EXTRA = 'pip install "napari-pdmfuse[formats]"'

#: bioio's dimension letters that are ours too; others (mosaic tiles, views…) must have length 1.
_LETTERS = "TCZYXS"

#: The name a reader gives a scene it was given no name for ("Image:0"): no name at all.
_PLACEHOLDER_NAME = re.compile(r"(Image:?)?\d*")


@dataclass(frozen=True)
class VendorFormat:
    """A vendor format: what to call it in messages, the bioio plugin that reads it, and how
    its files begin (a pattern matched against the first 16 bytes)."""

    description: str
    module: str
    magic: re.Pattern[bytes]


#: Vendor formats recognised by name or first bytes, before the TIFF and plane readers.
FORMATS = {
    ".czi": VendorFormat("a Zeiss CZI file", "bioio_czi", re.compile(rb"ZISRAWFILE")),
    ".nd2": VendorFormat(
        "a Nikon ND2 file",
        "bioio_nd2",
        re.compile(rb"\xda\xce\xbe\x0a|\x00\x00\x00\x0cjP  \r\n\x87\n"),
    ),
    # LIF: a 4-byte test value, the XML header's size, then its marker byte.
    ".lif": VendorFormat(
        "a Leica LIF file", "bioio_lif", re.compile(rb"\x70\x00\x00\x00.{4}\x2a", re.S)
    ),
}


def vendor_format(path: Path) -> str | None:
    """The suffix (a key of FORMATS) of the vendor format ``path`` is in, by its name or, for a
    renamed file, its first bytes; None for anything else."""
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        return suffix
    try:
        with path.open("rb") as handle:
            head = handle.read(16)
    except OSError:
        return None  # the reader that claims the file reports it
    return next((key for key, fmt in FORMATS.items() if fmt.magic.match(head)), None)


def other_reader(path: Path) -> bool:
    """Whether an installed bioio plugin (beyond the formats above) reads files named so."""
    if importlib.util.find_spec("bioio") is None:
        return False
    try:
        from bioio.plugins import get_plugins

        extensions = get_plugins(use_cache=True)
    except Exception:
        return False
    name = path.name.lower()
    return any(isinstance(ext, str) and ext and name.endswith(ext.lower()) for ext in extensions)


def vendor_scenes(path: Path, kind: str | None = None) -> tuple[Scene, ...]:
    """The scenes (CZI scenes, ND2 positions, LIF series) of a vendor file."""
    return _scenes(_bioimage(path, kind), path)


def _scenes(bioimage: Any, path: Path) -> tuple[Scene, ...]:
    try:
        names = [_scene_name(str(s)) for s in bioimage.scenes]
    except Exception:
        raise unreadable(path) from None
    return scenes_named(names) if names else SINGLE


def read_vendor(
    path: Path,
    axes: str | None = None,
    planes_together: bool = True,
    kind: str | None = None,
    scene: int | None = None,
) -> Image:
    """A scene of a vendor file (the first when ``scene`` is None, with a warning if there are
    more), lazily, as bioio reads it: axes (length-one axes dropped), pixel size and Z step
    (bioio gives micrometres), channel names, the scene's name and the time step. ``kind`` is
    a key of FORMATS, or None for another bioio format."""
    bioimage = _bioimage(path, kind)
    scenes = _scenes(bioimage, path)
    if scene is None:
        warn_first_only(path, scenes)
    chosen = scenes[0] if scene is None else checked_index(path, scenes, scene)
    try:
        if chosen.index:
            bioimage.set_scene(chosen.index)
        raw = bioimage.dask_data
        dims = str(bioimage.dims.order).upper()
    except Exception:
        raise unreadable(path) from None
    shape = tuple(int(n) for n in raw.shape)
    check_dtype(path, raw.dtype)
    reopen = (_reopen, (location(path), path, kind, chosen.index))
    chunks = read_chunks(
        tuple(int(c) for c in raw.chunksize), dims, shape, raw.dtype.itemsize, planes_together
    )
    data = lazy(GuardedArray(raw, path, reopen=reopen), chunks)
    if axes is None:
        data, letters = file_axes(data, dims, path, n_series=1)
    else:
        data, letters = given_axes(squeeze(data, dims)[0], dims, shape, path, axes)
    return Image(
        data=data,
        axes=letters,
        sources=(path,),
        name=chosen.name or stem(path),
        channel_names=_channel_names(bioimage, letters, data.shape),
        **vars(_scale(bioimage, path)),
    )


def _bioimage(path: Path, kind: str | None) -> Any:
    """bioio's image of ``path``, read with the format's own plugin when it is known."""
    fmt = FORMATS.get(kind or "")
    what = fmt.description if fmt else "in a format only an optional reader handles"
    missing = importlib.util.find_spec("bioio") is None
    if fmt is not None and not missing:
        missing = importlib.util.find_spec(fmt.module) is None
    if missing:
        raise ReadError(
            f"{path} is {what}; install the optional formats with {FORMATS_EXTRA} to read it."
        )
    from bioio import BioImage

    try:
        if fmt is None:
            return BioImage(path)
        return BioImage(path, reader=importlib.import_module(fmt.module).Reader)
    except Exception:
        raise unreadable(path) from None


def _reopen(where: str, path: Path, kind: str | None, scene: int = 0) -> GuardedArray:
    """The scene of the file at ``where`` again, on a cluster worker, for messages naming
    ``path``."""
    bioimage = _bioimage(Path(where), kind)
    try:
        if scene:
            bioimage.set_scene(scene)
        raw = bioimage.dask_data
    except Exception:
        raise unreadable(path) from None
    return GuardedArray(raw, path, reopen=(_reopen, (where, path, kind, scene)))


def _scene_name(scene: str) -> str | None:
    name = scene.strip()
    return None if _PLACEHOLDER_NAME.fullmatch(name) else name


def _channel_names(bioimage: Any, axes: str, shape: tuple[int, ...]) -> tuple[str, ...] | None:
    """One name per channel of the C axis, or None when the file gives no usable names."""
    if "C" not in axes:
        return None
    try:
        names = [str(n).strip() for n in bioimage.channel_names or ()]
    except Exception:
        return None
    if len(names) != shape[axes.index("C")] or not all(names):
        return None
    return tuple(names)


def _scale(bioimage: Any, path: Path) -> Scale:
    """Pixel size and Z step (bioio reports micrometres) and the time step, checked."""
    try:
        sizes = bioimage.physical_pixel_sizes
        z, y, x = (_number(v) for v in (sizes.Z, sizes.Y, sizes.X))
    except Exception:
        z = y = x = None
    pixel = (y, x) if y is not None and x is not None else None
    unit = "um" if z is not None or pixel is not None else None
    found = Scale(z_spacing=z, pixel_size=pixel, unit=unit, time_interval=_interval(bioimage))
    return checked(found, path)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _interval(bioimage: Any) -> float | None:
    """Seconds between time points: bioio gives a pint quantity (or a number of seconds)."""
    try:
        value = bioimage.time_interval
    except Exception:
        return None
    if value is None:
        return None
    if hasattr(value, "to"):
        try:
            value = value.to("s").magnitude
        except Exception:
            return None
    return seconds(float(value), "s") if isinstance(value, numbers.Real) else None
