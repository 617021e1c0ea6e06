"""OME-Zarr images (OME-NGFF 0.4 and 0.5) and plain zarr arrays, opened lazily, on disk or
at an address (HTTP(S), S3).

The full-resolution level is read, in blocks of the store's own chunks with the focal planes
grouped for fusing; axes, physical sizes, the time step, channel labels and the image name
come from the NGFF metadata, checked so that broken metadata is one sentence, not a traceback.
"""

from __future__ import annotations

import dataclasses
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..errors import InputError, ReadError
from ..ngff import multiscales, transforms
from .axes import normalise_axes
from .guarded import GuardedArray, check_dtype, lazy, read_chunks
from .image import Image, stem
from .remote import is_url, open_zarr, url_name
from .scale import Scale, checked, seconds, unit
from .scenes import SINGLE, Scene, checked_index, scenes_named, warn_first_only

#: OME-NGFF axis names and the letters used here.
NGFF_AXES = {"t": "T", "c": "C", "z": "Z", "y": "Y", "x": "X"}


def zarr_scenes(path: Path) -> tuple[tuple[Scene, ...], list[str]] | None:
    """The images of an OME-Zarr collection as scenes, with each one's group: the fields of an
    HCS plate (named ``<well> field <n>``, e.g. ``A1 field 0``), or the images of the
    bioformats2raw layout (a group per image, named 0, 1, …, listed by its ``OME`` group and
    named in ``OME/METADATA.ome.xml``); None for a store that is neither."""
    try:
        root = zarr.open(str(path), mode="r")
    except Exception:
        return None  # read_zarr says what is wrong with it
    if not isinstance(root, zarr.Group):
        return None
    attrs = ome_attrs(dict(root.attrs))
    if "plate" in attrs:
        return _plate_fields(root, path)
    if "bioformats2raw.layout" not in attrs:
        return None
    try:
        keys = _series_keys(root)
        names = _xml_names(Path(path), len(keys))
        for index, key in enumerate(keys):
            if names[index] is None:  # named by the image's own metadata, if at all
                images = multiscales(dict(root[key].attrs))
                names[index] = _name(images[0]) if images else None
    except Exception:
        raise ReadError(
            f"{path} is an OME-Zarr collection whose images cannot be listed; check that its "
            "numbered image groups and OME metadata are complete."
        ) from None
    if not keys:
        raise ReadError(f"{path} is an OME-Zarr collection without any image; check the store.")
    return scenes_named(names), keys


def plate_fields(root: Any, path: Path) -> list[tuple[str, str, str]]:
    """An HCS plate's fields, in the plate's well order: (well path, well name, field path),
    e.g. ("A/1", "A1", "0"); a ReadError when its metadata does not list them."""
    fields = []
    try:
        for well in ome_attrs(dict(root.attrs))["plate"]["wells"]:
            well_path = str(well["path"])
            images = ome_attrs(dict(root[well_path].attrs))["well"]["images"]
            fields += [(well_path, well_path.replace("/", ""), str(i["path"])) for i in images]
    except Exception:
        raise ReadError(
            f"{path} is an OME-Zarr plate whose wells and fields cannot be listed; check its "
            "plate and well metadata."
        ) from None
    if not fields:
        raise ReadError(f"{path} is an OME-Zarr plate without any field; check the store.")
    return fields


def _plate_fields(root: Any, path: Path) -> tuple[tuple[Scene, ...], list[str]]:
    fields = plate_fields(root, path)
    names = [f"{well} field {field}" for _, well, field in fields]
    return scenes_named(names), [f"{well}/{field}" for well, _, field in fields]


def ome_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    """NGFF attributes: at the top level (0.4) or under ``ome`` (0.5)."""
    return attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs


def _series_keys(root: Any) -> list[str]:
    """The collection's image groups: as its OME group lists them, else 0, 1, … while they
    exist."""
    if "OME" in root:
        listed = ome_attrs(dict(root["OME"].attrs)).get("series")
        if isinstance(listed, list):
            return [str(key) for key in listed]
    keys = []
    while str(len(keys)) in root:
        keys.append(str(len(keys)))
    return keys


def _xml_names(path: Path, count: int) -> list[str | None]:
    """The Image names of the collection's OME-XML, one per image (None where absent)."""
    import xml.etree.ElementTree as ET

    names: list[str | None] = [None] * count
    xml = path / "OME" / "METADATA.ome.xml"
    if not xml.is_file():
        return names
    images = [e for e in ET.parse(xml).getroot() if e.tag.rsplit("}", 1)[-1] == "Image"]
    for index, image in enumerate(images[:count]):
        name = (image.get("Name") or "").strip()
        names[index] = name or None
    return names


def read_zarr(path: Path | str, axes: str | None = None, scene: int | None = None) -> Image:
    """An OME-Zarr image (its full-resolution level) or a plain zarr array, lazily; ``path`` is
    a local store or the address of a remote one (a string). Of a collection, the image
    ``scene`` (the first when None, with a warning when there are more).

    The axes come from the NGFF metadata; a plain array of three axes is taken as (Z, Y, X),
    anything else needs ``axes``. A remote image has no local sources: there is no file an
    output could overwrite.
    """
    remote = is_url(path)
    collection = None if remote else zarr_scenes(Path(path))
    if collection is not None:
        scenes, keys = collection
        if scene is None:
            warn_first_only(Path(path), scenes)
        chosen = scenes[0] if scene is None else checked_index(Path(path), scenes, scene)
        image = read_zarr(Path(path) / keys[chosen.index], axes)
        name = chosen.name or stem(Path(path))
        return dataclasses.replace(image, sources=(Path(path),), name=name)
    if scene:
        checked_index(Path(str(path)), SINGLE, scene)
    node = open_zarr(str(path)) if remote else None
    try:
        if node is None:
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
        file_axes = normalise_axes(axes, shape, str(path))
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
    check_dtype(path, np.dtype(array.dtype))
    scale = Scale() if image is None else _scale(image, file_axes, str(path))
    itemsize = np.dtype(array.dtype).itemsize
    chunks = read_chunks(tuple(array.chunks), file_axes, shape, itemsize, planes_together=True)
    labels = None if image is None else _channel_labels(node, file_axes, shape)
    return Image(
        data=lazy(GuardedArray(array, path, dataset), chunks),
        axes=file_axes,
        sources=() if remote else (Path(path),),
        name=_name(image) or stem(Path(url_name(str(path)) if remote else path)),
        z_spacing=scale.z_spacing,
        pixel_size=scale.pixel_size,
        unit=scale.unit,
        channel_names=labels,
        time_interval=scale.time_interval,
    )


def _scale(image: dict[str, Any], axes: str, path: str) -> Scale:
    """Physical sizes from the full-resolution level's scale (times the image's own), in the
    unit of the X axis converted to micrometres; none when X has no length unit."""
    ndim = len(axes)
    lists = [
        image["datasets"][0].get("coordinateTransformations"),
        image.get("coordinateTransformations"),
    ]
    for items in lists:
        if items is not None and not _numeric_transforms(items, ndim):
            raise ReadError(
                f"{path} has OME-Zarr coordinateTransformations that are not lists of {ndim} "
                "numbers; fix the image's metadata or export it again."
            )
    level, _ = transforms(lists[0], ndim)
    outer, _ = transforms(lists[1], ndim)
    size = {a: s * o for a, s, o in zip(axes, level, outer, strict=True)}
    units = {
        str(a.get("name", "")).lower(): a.get("unit") for a in image["axes"] if isinstance(a, dict)
    }
    unit_name, factor = unit(units.get("x"))
    interval = seconds(size["T"], units.get("t")) if "T" in size else None
    if unit_name != "um":
        return Scale(time_interval=interval)
    z_unit, z_factor = unit(units.get("z") or units.get("x"))
    z = size["Z"] * z_factor if z_unit == "um" else None
    pixel = (size["Y"] * factor, size["X"] * factor)
    found = Scale(z_spacing=z, pixel_size=pixel, unit="um", time_interval=interval)
    return checked(found, path)


def _numeric_transforms(items: Any, ndim: int) -> bool:
    """Whether ``items`` is a list of transformations whose scale or translation (if any) is a
    list of ``ndim`` real numbers."""
    if not isinstance(items, list):
        return False
    for transform in items:
        if not isinstance(transform, dict):
            return False
        kind = transform.get("type")
        if kind not in ("scale", "translation"):
            continue
        values = transform.get(kind)
        if not isinstance(values, list) or len(values) != ndim:
            return False
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
            return False
    return True


def _name(image: dict[str, Any] | None) -> str | None:
    name = None if image is None else image.get("name")
    return name.strip() if isinstance(name, str) and name.strip() else None


def _channel_labels(node: Any, axes: str, shape: tuple[int, ...]) -> tuple[str, ...] | None:
    """Channel labels from the ``omero`` metadata (top level in 0.4, under ``ome`` in 0.5),
    one per channel of the C axis; None otherwise."""
    if "C" not in axes:
        return None
    attrs = dict(node.attrs)
    omero = attrs.get("omero")
    if omero is None and isinstance(attrs.get("ome"), dict):
        omero = attrs["ome"].get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list) or len(channels) != shape[axes.index("C")]:
        return None
    labels = [c.get("label") if isinstance(c, dict) else None for c in channels]
    if not all(isinstance(n, str) and n.strip() for n in labels):
        return None
    return tuple(str(n) for n in labels)
