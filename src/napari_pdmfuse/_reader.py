"""napari reader: focus stacks in TIFF (plain, ImageJ hyperstack, OME), OME-Zarr (local or at an
http(s)/s3 address), folders of planes and microscope vendors' files (CZI, ND2, LIF, with the
optional formats), opened lazily.

Nothing is decoded when a file is opened: layers hold dask arrays whose chunks are read as napari
displays them (or as the fusion asks for tiles), so stacks larger than memory open in seconds.
Axis labels, physical scale, units and channel names come from the file's metadata (OME, ImageJ,
tifffile's shaped description, NGFF), so the widget fuses them with the right Z axis and writes
the focus map in physical units.

napari's own reader also claims ``*.tif``, ``*.zarr`` and folders, and napari asks which reader
to use whenever two claim a file, until the user ticks "remember" (a pattern in napari's
``settings.plugins.extension2reader``). Chosen once for ``*.tif``, this reader then opens every
TIFF: a file that holds no focus stack (one plane, an RGB picture, channels without Z) opens
lazily too, labelled, rather than failing and bringing the question back. Qt-free.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import dask.array as da

from .errors import InputError, PdmFuseError, printable
from .ngff import is_zarr_name, is_zarr_store, multiscales, transforms
from .reading import Image, Scene, is_tiff, is_url, list_scenes, open_image
from .reading.axes import ordered, viewable_axes
from .reading.guarded import unreadable
from .reading.image import stem
from .reading.remote import open_zarr, url_name
from .reading.scale import Scale
from .reading.tiff import open_tiff
from .reading.zarr import zarr_scenes

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

#: This plugin's name, as napari's ``plugin=`` arguments and reader preferences name it.
PLUGIN = "napari-pdmfuse"

#: napari's unit for axes without a physical size.
_PIXEL = "pixel"

#: The order layers show an image's axes in: napari displays the last two (or three, with RGB
#: samples) axes, and the widget finds the channels in front of Y and X. Other letters (axes a
#: file leaves unnamed) go first.
_LAYER_ORDER = "TZCYXS"


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """The npe2 reader hook: a function reading ``path``, or None if this reader passes."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        layers = read_layers(path)
    except PdmFuseError:
        return None  # not an image this reader understands: napari's own readers may be
    return lambda _path: layers


def read_layers(path: str | Path, stacks_only: bool = False) -> list[LayerData]:
    """The layers of a file, folder or address, opened lazily, or a one-sentence PdmFuseError.

    Zarr stores give OME-Zarr images (multiscale when they have levels) or zarr arrays of three
    or more axes; folders give their planes as one stack; files give their whole stack, with
    time points and channels. A TIFF that holds no stack opens as the image it is, unless
    ``stacks_only`` (the widget's "Open stack…") asks for a stack and gets the reason instead.
    Layer names are :func:`~napari_pdmfuse.errors.printable`, as messages are: a file name's
    bytes that are not UTF-8 are kept by Python as lone surrogates, which no encoder accepts,
    and would pass from the layer's name to the result layers' names and to saved files.
    """
    layers = _read_layers(path, stacks_only)
    return [
        (data, {**kwargs, "name": _printable_name(kwargs.get("name"))}, kind)
        for data, kwargs, kind in layers
    ]


def _printable_name(name: Any) -> Any:
    return name if name is None else printable(str(name))


def _read_layers(path: str | Path, stacks_only: bool) -> list[LayerData]:
    remote = is_url(str(path))
    local = Path(path)
    if remote or (local.is_dir() and (is_zarr_name(local) or is_zarr_store(local))):
        try:
            layers = _zarr_layers(str(path) if remote else local)
        except PdmFuseError:
            raise
        except Exception:
            raise unreadable(str(path) if remote else local) from None
        if not layers or (stacks_only and all(_ndim(layer) < 3 for layer in layers)):
            raise InputError(
                f"{path} holds no stack (an OME-Zarr image or a zarr array of three or more "
                "axes); choose the store of a focus stack."
            )
        return layers
    if local.is_file() and len(layers := file_layers(local)) > 1:
        return layers  # a layer per scene, position or series
    try:
        return [image_layer(open_image([local], for_viewing=True))]
    except InputError:
        if stacks_only or not local.is_file() or not is_tiff(local):
            raise
        return [tiff_layer(local)]


def _zarr_layers(store: Path | str) -> list[LayerData]:
    """The image of an OME-Zarr store or zarr array, or a layer per image of a collection."""
    found = zarr_scenes(store) if isinstance(store, Path) else None
    if found is None:
        layer = zarr_layer(store)
        return [] if layer is None else [layer]
    named = (
        _scene_named(zarr_layer(store / key), store, scene)
        for scene, key in zip(*found, strict=True)
    )
    return [layer for layer in named if layer is not None]


def _ndim(layer: LayerData) -> int:
    data, kwargs, _ = layer
    return int((data[0] if kwargs.get("multiscale") else data).ndim)


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
# Files opened as one Image: TIFF, OME-TIFF, vendor formats, folders of planes


def image_layer(image: Image) -> LayerData:
    """One image layer: the image's axes in T, Z, C, Y, X order (RGB samples last), labelled,
    scaled by the file's Z step and pixel size, with their units when the file gives them, and
    the channel names (as the widget reads them) in the metadata."""
    source = str(image.sources[0]) if image.sources else image.name
    return _layer(image.data, image.axes, image.name, source, image, image.channel_names)


def tiff_layer(path: Path) -> LayerData:
    """A TIFF that holds no focus stack (one plane, an RGB picture, channels or time points
    without Z), opened lazily with its axes as the file names them, so that this reader can be
    napari's reader for every TIFF."""
    opened = open_tiff(path)
    data, axes = viewable_axes(opened.data, opened.axes, path)
    names = opened.channel_names
    if names is not None and ("C" not in axes or len(names) != data.shape[axes.index("C")]):
        names = None
    return _layer(data, axes, opened.name or stem(path), str(path), opened.scale, names)


def _layer(
    data: Any,
    axes: str,
    name: str | None,
    source: str | None,
    sizes: Image | Scale,
    channel_names: tuple[str, ...] | None,
) -> LayerData:
    """An image layer of ``data`` whose axes are ``axes`` (letters), placed by ``sizes`` (Z step,
    pixel size, unit and time step, as an Image or a file's Scale holds them)."""
    order = sorted(range(len(axes)), key=lambda i: (_LAYER_ORDER.find(axes[i]), i))
    data = ordered(data, order)
    axes = "".join(axes[i] for i in order)
    rgb = axes.endswith("S") and int(data.shape[-1]) in (3, 4)
    shown = axes[:-1] if rgb else axes
    py, px = sizes.pixel_size or (1.0, 1.0)
    steps = {"Z": sizes.z_spacing or 1.0, "Y": py, "X": px}
    kwargs: dict[str, Any] = {
        "name": name,
        "rgb": rgb,
        "axis_labels": tuple(a.lower() for a in shown),
        "scale": tuple(float(steps.get(a, 1.0)) for a in shown),
        "metadata": {
            "source": source,
            "axes": axes,
            "z_spacing": sizes.z_spacing,
            "pixel_size": sizes.pixel_size,
            "unit": sizes.unit,
            "channel_names": channel_names,
            "time_interval": sizes.time_interval,
        },
    }
    if sizes.unit == "um":
        known = {"Z": sizes.z_spacing is not None, "Y": sizes.pixel_size is not None}
        known["X"] = known["Y"]
        kwargs["units"] = tuple("micrometer" if known.get(a) else _PIXEL for a in shown)
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
