"""What a fusion takes from the layers it fuses: an :class:`~napari_pdmfuse.reading.Image` and
where the results go in the viewer.

A napari layer knows its axes only by position, label, scale and unit. This module guesses
which axis is Z, channels and time (labels first, then shapes, skipping axes of length 1, which
readers add for a missing T or C), builds the one :class:`Image` every fusion starts from, and
keeps the layer's placement (:class:`Source`) so the results line up with it. Qt-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, printable
from ..reading import Image

CHANNEL_LABELS = ("c", "ch", "channel", "channels")
TIME_LABELS = ("t", "time", "frame", "frames")

#: Placement of one leading result axis: (scale, translate, label, unit or None).
Lead = tuple[float, float, str, Any]


def unit_label(unit: Any) -> str | None:
    """Short name of a layer axis unit (``µm``), None for napari's default ``pixel``."""
    if unit is None:
        return None
    text = f"{unit:~}" if hasattr(unit, "dimensionality") else str(unit)
    return None if text in ("px", "pixel", "") else text


def full_data(layer: Any) -> Any:
    """The layer's full-resolution data, as an array the fusion can index lazily."""
    data = layer.data[0] if layer.multiscale else layer.data
    if not isinstance(data, np.ndarray) and not hasattr(data, "dask"):
        import dask.array as da

        data = da.from_array(data)  # zarr and other array-likes: lazy, transposable
    return data


def stack_axes(layer: Any) -> list[int]:
    """Data axes that can hold Z, channels or time: all but the displayed Y, X (and RGB)."""
    return list(range(max(layer.ndim - 2, 0)))


def _labels(layer: Any) -> list[str]:
    return [str(a).lower() for a in layer.axis_labels]


def _long(layer: Any, axis: int) -> bool:
    return int(layer.data.shape[axis]) > 1


def default_z_axis(layer: Any) -> int:
    """The axis labelled z; else the first axis longer than 1 not labelled as channels or
    time; else the first axis."""
    labels = _labels(layer)
    axes = stack_axes(layer)
    named = [i for i in axes if labels[i] == "z"]
    if named:
        return named[0]
    other = CHANNEL_LABELS + TIME_LABELS
    return next((i for i in axes if _long(layer, i) and labels[i] not in other), 0)


def default_channel_axis(layer: Any, z_axis: int) -> int | None:
    """The axis (longer than 1) labelled as channels, else the only axis longer than 1 left
    besides Z, Y, X and an axis labelled as time, else none (RGB layers: none)."""
    if layer.rgb:
        return None
    labels = _labels(layer)
    candidates = [
        i
        for i in stack_axes(layer)
        if i != z_axis and labels[i] not in TIME_LABELS and _long(layer, i)
    ]
    labelled = [i for i in candidates if labels[i] in CHANNEL_LABELS]
    if labelled:
        return labelled[0]
    return candidates[0] if len(candidates) == 1 else None


def default_time_axis(layer: Any, z_axis: int, channel_axis: int | None) -> int | None:
    """The axis (longer than 1) labelled as time (t, time, frame), if it is not Z or the
    channels; else none."""
    labels = _labels(layer)
    taken = (z_axis, channel_axis)
    return next(
        (
            i
            for i in stack_axes(layer)
            if labels[i] in TIME_LABELS and i not in taken and _long(layer, i)
        ),
        None,
    )


@dataclass(frozen=True)
class Source:
    """What the result layers take from the layers they were fused from.

    ``scale``/``translate``/``units``/``axis_labels`` place results in Y and X like the source;
    ``leading`` places their T and C axes (letter → scale, translate, label, unit).
    """

    name: str
    rgb: bool
    n_planes: int
    scale: tuple[float, float]
    translate: tuple[float, float]
    contrast_limits: tuple[float, float]
    colormap: Any
    units: tuple[Any, ...] | None = None
    axis_labels: tuple[str, str] = ("y", "x")
    z_scale: float = 1.0
    z_translate: float = 0.0
    z_unit: str | None = None
    layers: tuple[str, ...] = ()
    leading: dict[str, Lead] = field(default_factory=dict, compare=False)

    def placement(self, axes: str) -> dict[str, Any]:
        """Scale, translate, labels (and units) of a result with ``axes`` (e.g. "TCYX")."""
        lead = [self.leading[a] for a in axes if a in "TC"]
        placed: dict[str, Any] = {
            "scale": (*(p[0] for p in lead), *self.scale),
            "translate": (*(p[1] for p in lead), *self.translate),
            "axis_labels": (*(p[2] for p in lead), *self.axis_labels),
        }
        if self.units is not None:
            placed["units"] = (*(p[3] if p[3] is not None else "pixel" for p in lead), *self.units)
        return placed

    @property
    def physical_z(self) -> bool:
        """Whether the focus map is in physical units: the layer's Z scale is not 1."""
        return self.z_scale != 1.0

    @property
    def focus_unit(self) -> str:
        if not self.physical_z:
            return "slices"
        return self.z_unit or "z scale units"


def _yx(layer: Any) -> dict[str, Any]:
    units = tuple(layer.units[-2:]) if unit_label(layer.units[-1]) else None
    return {
        "scale": tuple(float(s) for s in layer.scale[-2:]),
        "translate": tuple(float(t) for t in layer.translate[-2:]),
        "units": units,
        "axis_labels": tuple(str(a) for a in layer.axis_labels[-2:]),
        "contrast_limits": tuple(float(c) for c in layer.contrast_limits),
        "colormap": layer.colormap,
        "rgb": bool(layer.rgb),
    }


def _image_unit(source: Source) -> str | None:
    """The Image's unit: "um" for micrometres (as files record it), else the layer's label."""
    label = unit_label(source.units[-1]) if source.units else None
    return "um" if label in ("µm", "um", "micrometer") else label


def _channel_names(layer: Any, n_channels: int) -> tuple[str, ...] | None:
    names = layer.metadata.get("channel_names")
    if names is not None and len(names) == n_channels:
        return tuple(str(n) for n in names)
    return None


def layer_image(
    layer: Any, z_axis: int, channel_axis: int | None = None, time_axis: int | None = None
) -> tuple[Image, Source]:
    """The Image of one layer with these axes (other axes of length 1 are dropped), and the
    layer's placement; raises :class:`InputError` with a sentence when they do not fit."""
    ndim = layer.ndim
    if ndim < 3:
        raise InputError(
            f"Layer {layer.name!r} is a single 2-D image; choose a layer with a Z axis "
            "(a 3-D stack, grey or RGB), or fuse several 2-D layers as planes."
        )
    named = {"Z": z_axis, "C": channel_axis, "T": time_axis}
    for letter, axis in named.items():
        if axis is not None and not 0 <= axis < ndim - 2:
            raise InputError(
                f"Layer {layer.name!r} has no axis {axis} to take as {letter}; choose another."
            )
    chosen = [a for a in named.values() if a is not None]
    if len(set(chosen)) != len(chosen):
        raise InputError("The Z, channel and time axes must be different axes; choose again.")
    data = full_data(layer)
    extra = [i for i in stack_axes(layer) if i not in chosen]
    if any(int(data.shape[i]) > 1 for i in extra):
        raise InputError(
            f"Layer {layer.name!r} has {ndim} dimensions besides colour; choose its channel axis "
            "or its time axis, so that only Z, Y and X are left."
        )
    letters = {axis: letter for letter, axis in named.items() if axis is not None}
    if extra:  # axes of length 1 (a missing T or C): dropped
        data = data[tuple(0 if i in extra else slice(None) for i in range(ndim))]
    axes = "".join(letters[i] for i in stack_axes(layer) if i in letters)
    axes += "YX" + "S" * bool(layer.rgb)
    leading = {
        letter: (
            float(layer.scale[axis]),
            float(layer.translate[axis]),
            str(layer.axis_labels[axis]),
            layer.units[axis] if unit_label(layer.units[axis]) else None,
        )
        for letter, axis in named.items()
        if axis is not None and letter != "Z"
    }
    name = printable(layer.name)  # a name from a file name may hold undecodable bytes
    source = Source(
        name=name,
        n_planes=int(data.shape[axes.index("Z")]),
        z_scale=float(layer.scale[z_axis]),
        z_translate=float(layer.translate[z_axis]),
        z_unit=unit_label(layer.units[z_axis]),
        layers=(name,),
        leading=leading,
        **_yx(layer),
    )
    n_channels = int(layer.data.shape[channel_axis]) if channel_axis is not None else 0
    image = Image(
        data=data,
        axes=axes,
        name=name,
        z_spacing=source.z_scale if source.physical_z else None,
        pixel_size=source.scale if source.units else None,
        unit=_image_unit(source),
        channel_names=_channel_names(layer, n_channels) if n_channels else None,
        time_interval=layer.metadata.get("time_interval") if time_axis is not None else None,
    )
    return image, source


def planes_image(layers: Sequence[Any]) -> tuple[Image, Source]:
    """The Image of 2-D layers taken as focal planes in the given order, stacked lazily."""
    import dask.array as da

    if len(layers) < 2:
        chosen = "No layer is" if not layers else "Only one layer is"
        raise InputError(f"{chosen} chosen; select two or more 2-D layers to fuse as planes.")
    first = layers[0]
    for layer in layers:
        if layer.ndim != 2:
            raise InputError(f"Layer {layer.name!r} is not a 2-D image; choose 2-D layers only.")
        if layer.rgb != first.rgb or layer.data.shape != first.data.shape:
            raise InputError(
                f"Layer {layer.name!r} ({'×'.join(map(str, layer.data.shape))}) does not match "
                f"{first.name!r} ({'×'.join(map(str, first.data.shape))}); every plane must have "
                "the same size and colour layout."
            )
    source = Source(
        name=printable(f"{first.name} … {layers[-1].name}"),
        n_planes=len(layers),
        layers=tuple(printable(layer.name) for layer in layers),
        **_yx(first),
    )
    data = da.stack([da.asarray(full_data(layer)) for layer in layers])
    image = Image(
        data=data,
        axes="ZYX" + "S" * source.rgb,
        name=source.name,
        pixel_size=source.scale if source.units else None,
        unit=_image_unit(source),
    )
    return image, source
