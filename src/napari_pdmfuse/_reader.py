"""napari reader: focus stacks in TIFF, OME-TIFF and OME-Zarr files, opened lazily.

Nothing is decoded when a file is opened: layers hold dask arrays whose chunks are read as napari
displays them (or as the fusion asks for tiles), so stacks larger than memory open instantly.
Axis labels, physical scale and units come from the file's metadata, so the widget fuses them
with the right Z axis and writes the focus map in physical units.

The reader claims only what it adds value to — TIFF stacks with a Z axis, OME-Zarr images and
zarr arrays with three or more axes — and returns None for anything else (a plain 2-D TIFF,
an unrelated zarr group), so napari's own readers take over. Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from .errors import PdmFuseError
from .io import LoadedStack, read_stack
from .ngff import multiscales, transforms

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

TIFF_SUFFIXES = (".tif", ".tiff")
ZARR_SUFFIXES = (".zarr",)

#: napari's unit for axes without a physical size.
_PIXEL = "pixel"


def layer_name(path: Path) -> str:
    """The file name without its (possibly double) suffix: ``stack.ome.tif`` → ``stack``."""
    name = path.name.rstrip("/")
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The npe2 reader hook: a function reading ``path``, or None if this reader passes."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(TIFF_SUFFIXES) and p.is_file():
        try:
            loaded = read_stack([p])
        except PdmFuseError:
            return None  # a 2-D image or a layout that is not one stack: napari's reader opens it
        return lambda _path: [tiff_layer(loaded, p)]
    if name.endswith(ZARR_SUFFIXES) and p.is_dir():
        try:
            layer = zarr_layer(p)
        except Exception:
            return None  # not a zarr store we understand
        if layer is None:
            return None
        return lambda _path: [layer]
    return None


# ---------------------------------------------------------------------------------------------
# TIFF


def tiff_layer(loaded: LoadedStack, path: Path) -> LayerData:
    """One image layer for a TIFF stack: Z first, channels (if any) second, as napari shows them.

    ``read_stack`` puts a channel axis last (Z, Y, X, C); napari displays the last two axes, so
    channels move in front of Y and X, where the widget finds them as its channel axis.
    """
    data = loaded.data
    has_channels = loaded.channel_axis is not None
    if has_channels:
        data = data.transpose(0, 3, 1, 2)
    py, px = loaded.pixel_size or (1.0, 1.0)
    scale = [loaded.z_spacing or 1.0, *([1.0] if has_channels else []), py, px]
    labels = ["z", *(["c"] if has_channels else []), "y", "x"]
    kwargs: dict[str, Any] = {
        "name": layer_name(path),
        "rgb": loaded.rgb,
        "axis_labels": tuple(labels),
        "scale": tuple(float(s) for s in scale),
        "metadata": {
            "source": str(path),
            "axes": loaded.axes,
            "z_spacing": loaded.z_spacing,
            "pixel_size": loaded.pixel_size,
            "unit": loaded.unit,
        },
    }
    if loaded.unit == "um":
        um = "micrometer"
        kwargs["units"] = (
            um if loaded.z_spacing else _PIXEL,
            *([_PIXEL] if has_channels else []),
            um if loaded.pixel_size else _PIXEL,
            um if loaded.pixel_size else _PIXEL,
        )
    return data, kwargs, "image"


# ---------------------------------------------------------------------------------------------
# Zarr and OME-Zarr (OME-NGFF 0.4 and 0.5)


def _known_unit(name: str) -> bool:
    """Whether napari (pint) understands the unit name; others stay in the metadata only."""
    import pint

    try:
        return isinstance(pint.get_application_registry().parse_expression(name).units, pint.Unit)
    except Exception:
        return False


def zarr_layer(path: Path) -> LayerData | None:
    """An image layer for an OME-Zarr image (multiscale when it has several levels) or a plain
    zarr array of three or more axes; None for other zarr stores."""
    import zarr

    node = zarr.open(str(path), mode="r")
    name = layer_name(path)
    if isinstance(node, zarr.Array):
        if node.ndim < 3:
            return None
        return da.from_zarr(node), {"name": name, "rgb": False}, "image"
    images = multiscales(dict(node.attrs))
    if images is None:
        return None
    image = images[0]
    paths = [d["path"] for d in image["datasets"]]
    levels = [da.from_zarr(node[p]) for p in paths]
    ndim = levels[0].ndim
    axes = image.get("axes") or []
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    scale, translate = transforms(image["datasets"][0].get("coordinateTransformations"), ndim)
    outer, shift = transforms(image.get("coordinateTransformations"), ndim)
    scale = [a * b for a, b in zip(scale, outer, strict=True)]
    translate = [a * b + c for a, b, c in zip(translate, outer, shift, strict=True)]
    kwargs: dict[str, Any] = {
        "name": image.get("name") or name,
        "rgb": False,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "metadata": {"source": str(path), "multiscales": image},
    }
    if len(names) == ndim:
        kwargs["axis_labels"] = tuple(names)
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        if any(units) and all(_known_unit(u) for u in units if u):
            kwargs["units"] = tuple(u or _PIXEL for u in units)
    if len(levels) > 1:
        kwargs["multiscale"] = True
        return levels, kwargs, "image"
    return levels[0], kwargs, "image"
