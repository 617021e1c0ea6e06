"""napari reader: focus stacks in TIFF, OME-TIFF, OME-Zarr (local or at an http(s)/s3 address)
and microscope vendors' files (CZI, ND2, LIF, with the optional formats), opened lazily.

Nothing is decoded when a file is opened: layers hold dask arrays whose chunks are read as napari
displays them (or as the fusion asks for tiles), so stacks larger than memory open instantly.
Axis labels, physical scale, units and channel names come from the file's metadata, so the
widget fuses them with the right Z axis and writes the focus map in physical units.

napari's own reader also claims ``*.tif`` and ``*.zarr``, and napari asks the user to choose
whenever two readers claim a file. The manifest therefore claims no plain ``.tif``/``.tiff``
(napari opens those itself, without asking), only OME-TIFF names, zarr stores and vendor
files; vendor files are claimed by no other reader, so they open without a question. The reader
claims only what it adds value to — stacks with a Z axis (time points and channels included),
OME-Zarr images and zarr arrays with three or more axes — and returns None for anything else
(a 2-D image, an unrelated zarr group), so napari's own readers take over. Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from .errors import PdmFuseError
from .ngff import multiscales, transforms
from .reading import Image, Scene, is_url, list_scenes, open_image
from .reading.image import stem
from .reading.remote import open_zarr, url_name
from .reading.vendor import FORMATS
from .reading.zarr import zarr_scenes

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

#: Files opened through :func:`~napari_pdmfuse.reading.open_image` (TIFF names, vendor files).
FILE_SUFFIXES = (".tif", ".tiff", *FORMATS)
ZARR_SUFFIXES = (".zarr",)

#: napari's unit for axes without a physical size.
_PIXEL = "pixel"

#: The order layers show an image's axes in: napari displays the last two (or three, with RGB
#: samples) axes, and the widget finds the channels in front of Y and X.
_LAYER_ORDER = "TZCYXS"


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The npe2 reader hook: a function reading ``path``, or None if this reader passes."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    remote = is_url(str(path))
    p = Path(path)
    name = (url_name(str(path)) if remote else p.name).lower().rstrip("/")
    if not remote and name.endswith(FILE_SUFFIXES) and p.is_file():
        layers = file_layers(p)
        # None: a 2-D image or a layout that is not one stack: napari's reader opens it
        return None if not layers else lambda _path: layers
    if name.endswith(ZARR_SUFFIXES) and (remote or p.is_dir()):
        try:
            found = None if remote else zarr_scenes(p)
            if found is not None:  # a collection: a layer per image
                pairs = zip(*found, strict=True)
                named = (_scene_named(zarr_layer(p / key), p, scene) for scene, key in pairs)
                layers = [layer for layer in named if layer is not None]
            else:
                layer = zarr_layer(str(path) if remote else p)
                layers = [] if layer is None else [layer]
        except Exception:
            return None  # not a zarr store we understand, or an address that cannot be reached
        return None if not layers else lambda _path: layers
    return None


def file_layers(path: Path) -> list[LayerData]:
    """A layer per scene of a file that holds stacks (named ``<file> [<scene>]`` when there are
    several); scenes that are no stack are left out."""
    try:
        scenes = list_scenes([path])
    except PdmFuseError:
        return []
    layers = []
    for scene in scenes:
        try:
            image = open_image([path], for_viewing=True, scene=scene.index)
        except PdmFuseError:
            continue
        layer = image_layer(image)
        layers.append(layer if len(scenes) == 1 else _scene_named(layer, path, scene))
    return layers


def _scene_named(layer: LayerData | None, path: Path, scene: Scene) -> LayerData | None:
    """A scene's layer, named after its file and itself."""
    if layer is None:
        return None
    data, kwargs, kind = layer
    return data, {**kwargs, "name": f"{stem(path)} [{scene.describe()}]"}, kind


# ---------------------------------------------------------------------------------------------
# Files opened as one Image: TIFF, OME-TIFF, vendor formats


def image_layer(image: Image) -> LayerData:
    """One image layer: the image's axes in T, Z, C, Y, X order (RGB samples last), labelled,
    scaled by the file's Z step and pixel size, with their units when the file gives them, and
    the channel names (as the widget reads them) in the metadata."""
    image = image.ordered("".join(a for a in _LAYER_ORDER if a in image.axes))
    shown = image.axes.replace("S", "")
    py, px = image.pixel_size or (1.0, 1.0)
    sizes = {"Z": image.z_spacing or 1.0, "Y": py, "X": px}
    kwargs: dict[str, Any] = {
        "name": image.name,
        "rgb": image.rgb,
        "axis_labels": tuple(a.lower() for a in shown),
        "scale": tuple(float(sizes.get(a, 1.0)) for a in shown),
        "metadata": {
            "source": str(image.sources[0]) if image.sources else image.name,
            "axes": image.axes,
            "z_spacing": image.z_spacing,
            "pixel_size": image.pixel_size,
            "unit": image.unit,
            "channel_names": image.channel_names,
            "time_interval": image.time_interval,
        },
    }
    if image.unit == "um":
        um = "micrometer"
        known = {"Z": image.z_spacing is not None, "Y": image.pixel_size is not None}
        known["X"] = known["Y"]
        kwargs["units"] = tuple(um if known.get(a) else _PIXEL for a in shown)
    return image.data, kwargs, "image"


# ---------------------------------------------------------------------------------------------
# Zarr and OME-Zarr (OME-NGFF 0.4 and 0.5)


def _known_unit(name: str) -> bool:
    """Whether napari (pint) understands the unit name; others stay in the metadata only."""
    import pint

    try:
        return isinstance(pint.get_application_registry().parse_expression(name).units, pint.Unit)
    except Exception:
        return False


def zarr_layer(path: Path | str) -> LayerData | None:
    """An image layer for an OME-Zarr image (multiscale when it has several levels) or a plain
    zarr array of three or more axes, on disk or at an address (a string); None for other zarr
    stores."""
    import zarr

    remote = isinstance(path, str)
    node = open_zarr(path) if remote else zarr.open(str(path), mode="r")
    name = stem(Path(url_name(path) if remote else path))
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
