"""The "PDM Fuse" dock widget: a thin napari front end over :func:`napari_pdmfuse.fuse_iter`.

The widget only collects the options, runs the core's generator in a napari ``thread_worker``,
shows its progress and puts the results into the viewer; every computation happens in the core
(:mod:`napari_pdmfuse.fusion`) or in Qt-free helpers (:mod:`napari_pdmfuse.height_view`). This and
napari itself are the only places that import Qt.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    RadioButtons,
    Select,
    SpinBox,
    create_widget,
)
from napari.layers import Image, Surface
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error

from .errors import InputError, PdmFuseError
from .fusion import FusionResult, Progress, fuse_iter
from .height_view import height_surface
from .methods import DEFAULT_METHOD, METHODS

DEVICES = ("auto", "cpu", "cuda")
STACK, PLANES = "stack", "planes"
NO_CHANNEL = -1
CHANNEL_LABELS = ("c", "ch", "channel", "channels")


@dataclass(frozen=True)
class Failure:
    """A :class:`PdmFuseError` raised in the worker, handed back as a value to be shown."""

    message: str


def fuse_or_fail(data: Any, **options: Any) -> Generator[Progress, None, FusionResult | Failure]:
    """Run :func:`fuse_iter`, turning an error the user can act on into a :class:`Failure`.

    Other exceptions are bugs: they propagate to napari's error reporting with their traceback.
    """
    try:
        return (yield from fuse_iter(data, **options))
    except PdmFuseError as err:
        return Failure(str(err))


# -------------------------------------------------------------------------------------------------
# Reading the source layers


def unit_label(unit: Any) -> str | None:
    """Short name of a layer axis unit (``µm``), None for napari's default ``pixel``."""
    if unit is None:
        return None
    text = f"{unit:~}" if hasattr(unit, "dimensionality") else str(unit)
    return None if text in ("px", "pixel", "") else text


def full_data(layer: Image) -> Any:
    """The layer's full-resolution data, as an array :func:`fuse_iter` can index lazily."""
    data = layer.data[0] if layer.multiscale else layer.data
    if not isinstance(data, np.ndarray) and not hasattr(data, "dask"):
        import dask.array as da

        data = da.from_array(data)  # zarr and other array-likes: lazy, transposable
    return data


def stack_axes(layer: Image) -> list[int]:
    """Data axes that can hold Z (or channels): all but the displayed Y, X (and RGB) axes."""
    return list(range(max(layer.ndim - 2, 0)))


def default_z_axis(layer: Image) -> int:
    """The axis labelled z, if any, else the first axis."""
    labels = [str(a).lower() for a in layer.axis_labels]
    return next((i for i in stack_axes(layer) if labels[i] == "z"), 0)


def default_channel_axis(layer: Image, z_axis: int) -> int:
    """The axis labelled as channels, else the only axis left besides Z, Y and X, else none."""
    if layer.rgb:
        return NO_CHANNEL
    labels = [str(a).lower() for a in layer.axis_labels]
    candidates = [i for i in stack_axes(layer) if i != z_axis]
    labelled = [i for i in candidates if labels[i] in CHANNEL_LABELS]
    if labelled:
        return labelled[0]
    return candidates[0] if len(candidates) == 1 else NO_CHANNEL


def _axis_choice(layer: Image, axis: int) -> tuple[str, int]:
    return f"{axis}: {layer.axis_labels[axis]} ({layer.data.shape[axis]})", axis


@dataclass(frozen=True)
class Source:
    """What the results take from the layers they were fused from, read when the run starts.

    ``yx_*`` place 2-D results like the source in Y and X; ``channel`` holds the scale,
    translate and label of the source's channel axis, where the fused image puts its channels.
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
    channel: tuple[float, float, str] | None = None
    layers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def physical_z(self) -> bool:
        """Whether the focus map is in physical units: the layer's Z scale is not 1."""
        return self.z_scale != 1.0

    @property
    def focus_unit(self) -> str:
        if not self.physical_z:
            return "slices"
        return self.z_unit or "z scale units"


@dataclass(frozen=True)
class Job:
    """The arguments of one fusion run, checked on the main thread before the worker starts."""

    data: Any
    source: Source
    options: dict[str, Any]


def _placement(layer: Image) -> dict[str, Any]:
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


def stack_job(layer: Image, z_axis: int, channel_axis: int | None, **options: Any) -> Job:
    """A run over one layer with a Z axis: checks the layout and reads its placement."""
    ndim = layer.ndim
    if ndim < 3:
        raise InputError(
            f"Layer {layer.name!r} is a single 2-D image; choose a layer with a Z axis "
            "(a 3-D stack, grey or RGB), or fuse several 2-D layers as planes."
        )
    if not 0 <= z_axis < ndim - 2:
        raise InputError(f"Layer {layer.name!r} has no axis {z_axis} to take as Z; choose another.")
    expected = 3 + (channel_axis is not None)
    if ndim != expected:
        raise InputError(
            f"Layer {layer.name!r} has {ndim} dimensions besides colour; choose its channel axis "
            "for 4-D data, or fuse one time point at a time with napari_pdmfuse.fuse."
            if channel_axis is None
            else f"Layer {layer.name!r} has {ndim} dimensions; the widget fuses (Z, Y, X) stacks "
            "with at most one channel axis."
        )
    z_scale = float(layer.scale[z_axis])
    channel = None
    if channel_axis is not None:
        channel = (
            float(layer.scale[channel_axis]),
            float(layer.translate[channel_axis]),
            str(layer.axis_labels[channel_axis]),
        )
    data = full_data(layer)
    source = Source(
        name=layer.name,
        n_planes=int(data.shape[z_axis]),
        z_scale=z_scale,
        z_translate=float(layer.translate[z_axis]),
        z_unit=unit_label(layer.units[z_axis]),
        channel=channel,
        layers=(layer.name,),
        **_placement(layer),
    )
    options = {
        **options,
        "z_axis": z_axis,
        "channel_axis": channel_axis,
        "rgb": source.rgb,
        "z_spacing": z_scale if source.physical_z else None,
    }
    return Job(data, source, options)


def planes_job(layers: Sequence[Image], **options: Any) -> Job:
    """A run over 2-D layers taken as focal planes in the given order."""
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
    name = f"{first.name} … {layers[-1].name}"
    source = Source(
        name=name,
        n_planes=len(layers),
        layers=tuple(layer.name for layer in layers),
        **_placement(first),
    )
    data = [full_data(layer) for layer in layers]
    return Job(data, source, {**options, "rgb": source.rgb})


# -------------------------------------------------------------------------------------------------
# The widget


class FuseWidget(Container):
    """Fuse a Z stack — one layer with a Z axis, or 2-D layers as planes — and add or update
    "<name> fused", "… focus map" and "… confidence" layers, and on demand a 3-D height view."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from .model.device import describe_devices

        self.viewer = napari_viewer
        self.mode = RadioButtons(
            label="source",
            choices=[("one layer with a Z axis", STACK), ("2-D layers as planes", PLANES)],
            value=STACK,
        )
        self.image = create_widget(annotation=Image, label="image")
        self.z_axis = ComboBox(label="Z axis", choices=self._z_choices)
        self.channel_axis = ComboBox(label="channel axis", choices=self._channel_choices)
        self.planes = Select(label="planes", choices=self._plane_choices, allow_multiple=True)
        self.planes.tooltip = "2-D layers, fused as focal planes in the order listed here."
        self.method = ComboBox(label="method", choices=METHODS, value=DEFAULT_METHOD)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.device_info = Label(label="", value=describe_devices())
        self.tile = SpinBox(label="tile size (0 = auto)", min=0, max=16384, step=256, value=0)
        self.out_fused = CheckBox(text="fused", value=True)
        self.out_focus = CheckBox(text="focus map", value=True)
        self.out_confidence = CheckBox(text="confidence", value=True)
        outputs = Container(
            layout="horizontal",
            label="outputs",
            labels=False,
            widgets=[self.out_fused, self.out_focus, self.out_confidence],
        )
        outputs.margins = (0, 0, 0, 0)
        self.fuse_button = PushButton(text="Fuse")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(label="", value="")
        for label in (self.status, self.device_info):
            label.native.setWordWrap(True)  # long messages wrap instead of widening the dock
        self.relief = FloatSpinBox(
            label="height ×", min=0.01, max=1000.0, step=0.5, value=1.0, tooltip="Z exaggeration"
        )
        self.height_button = PushButton(text="Show 3-D height view", enabled=False)
        self.extend(
            [
                self.mode,
                self.image,
                self.z_axis,
                self.channel_axis,
                self.planes,
                self.method,
                self.device,
                self.device_info,
                self.tile,
                outputs,
                self.fuse_button,
                self.cancel_button,
                self.progress,
                self.status,
                self.relief,
                self.height_button,
            ]
        )
        self.worker: GeneratorWorker | None = None
        self.activity: progress | None = None
        self.last: tuple[Source, FusionResult] | None = None
        self.mode.changed.connect(self._on_mode)
        self.image.changed.connect(self._on_layer)
        self.z_axis.changed.connect(lambda _: self._reset_channel())
        self.method.changed.connect(self._on_method)
        self.fuse_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.height_button.changed.connect(self.show_height_view)
        self._on_mode(self.mode.value)
        self._on_method(self.method.value)
        self._on_layer(self.image.value)

    # -- choices --------------------------------------------------------------------------------

    def _z_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        if not isinstance(layer, Image):
            return []
        return [_axis_choice(layer, axis) for axis in stack_axes(layer)]

    def _channel_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        choices = [("none" if not getattr(layer, "rgb", False) else "none (RGB)", NO_CHANNEL)]
        if isinstance(layer, Image) and not layer.rgb:
            z = self.z_axis.value
            choices += [_axis_choice(layer, axis) for axis in stack_axes(layer) if axis != z]
        return choices

    def _plane_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer.ndim == 2
        ]

    def _on_mode(self, mode: str) -> None:
        stack = mode == STACK
        for widget in (self.image, self.z_axis):
            widget.visible = stack
        self.planes.visible = not stack
        self._reset_channel()

    def _on_layer(self, layer: Image | None) -> None:
        """A new layer is chosen: default its Z axis (labelled z, else the first axis)."""
        self.z_axis.reset_choices()
        if isinstance(layer, Image) and layer.ndim >= 3:
            self.z_axis.value = default_z_axis(layer)
        self._reset_channel(default=True)

    def _reset_channel(self, default: bool = False) -> None:
        previous = self.channel_axis.value
        self.channel_axis.reset_choices()
        layer = self.image.value
        valid = [value for _, value in self._channel_choices()]
        if isinstance(layer, Image) and (default or previous not in valid):
            self.channel_axis.value = default_channel_axis(layer, self.z_axis.value)
        # Shown only where a channel axis can exist: non-RGB layers of 4 or more dimensions.
        self.channel_axis.visible = (
            self.mode.value == STACK
            and isinstance(layer, Image)
            and not layer.rgb
            and layer.ndim >= 4
        )

    def _on_method(self, method: str) -> None:
        # Only PDMNet runs on a device; the classical methods are numpy on the CPU.
        self.device.enabled = method == "pdmnet"

    # -- running --------------------------------------------------------------------------------

    def job(self) -> Job:
        """The run the current choices describe; raises InputError with a sentence if none."""
        options = {
            "method": self.method.value,
            "device": self.device.value,
            "tile": int(self.tile.value) or None,
        }
        if self.mode.value == PLANES:
            order = list(self.viewer.layers)
            chosen = sorted(self.planes.value, key=order.index)
            return planes_job(chosen, **options)
        layer = self.image.value
        if layer is None:
            raise InputError("Choose an image layer holding a focus stack to fuse.")
        channel = self.channel_axis.value
        return stack_job(
            layer,
            int(self.z_axis.value if self.z_axis.value is not None else 0),
            None if channel in (None, NO_CHANNEL) else int(channel),
            **options,
        )

    def run(self) -> GeneratorWorker | None:
        """Start fusing in a worker thread; returns the worker, if one started."""
        if self.worker is not None:
            return None
        if not self.outputs():
            show_error("Choose at least one output: fused, focus map or confidence.")
            return None
        try:
            job = self.job()
        except PdmFuseError as err:
            show_error(str(err))
            return None
        source = job.source
        worker = create_worker(
            fuse_or_fail,
            job.data,
            **job.options,
            _ignore_errors=True,  # bugs still reach napari's error notifications
        )
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(lambda result: self._on_returned(source, result))
        worker.aborted.connect(lambda: self._set_status("Cancelled; the viewer is unchanged."))
        worker.errored.connect(lambda err: self._set_status("Failed."))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.fuse_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.max, self.progress.value = 1, 0
        self.activity = progress(total=0, desc=f"PDM Fuse: {source.name}")
        self._set_status(f"Fusing {source.name!r} with {job.options['method']}…")
        worker.start()
        return worker

    def outputs(self) -> set[str]:
        boxes = {
            "fused": self.out_fused,
            "focus": self.out_focus,
            "confidence": self.out_confidence,
        }
        return {name for name, box in boxes.items() if box.value}

    def cancel(self) -> None:
        """Stop the running fusion after its current tile; nothing is added to the viewer."""
        if self.worker is not None:
            self.worker.quit()
            self._set_status("Cancelling…")

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _on_progress(self, step: Progress) -> None:
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        if self.activity is not None:
            if self.activity.total != step.total:
                self.activity.total = step.total
            self.activity.update(step.done - self.activity.n)

    def _on_finished(self) -> None:
        self.worker = None
        self.fuse_button.enabled = True
        self.cancel_button.enabled = False
        if self.activity is not None:
            self.activity.close()
            self.activity = None

    def _on_returned(self, source: Source, result: FusionResult | Failure) -> None:
        if isinstance(result, Failure):
            self._set_status("Failed.")
            show_error(result.message)
            return
        self.show_result(source, result)
        self._set_status(
            f"Fused {source.name!r} with {result.method}; focus map in {source.focus_unit}."
        )

    # -- results --------------------------------------------------------------------------------

    def show_result(self, source: Source, result: FusionResult) -> None:
        """Add the chosen result layers, or update those of an earlier run on the same source."""
        self.last = (source, result)
        self.height_button.enabled = True
        outputs = self.outputs()
        placed: dict[str, Any] = {
            "scale": source.scale,
            "translate": source.translate,
            "axis_labels": source.axis_labels,
        }
        if source.units is not None:
            placed["units"] = source.units
        metadata = {"source": source.name, "method": result.method, "planes": source.layers}
        if "confidence" in outputs:
            self._put(
                f"{source.name} confidence",
                result.confidence,
                colormap="gray",
                contrast_limits=(0.0, 1.0),
                metadata=metadata,
                visible=False,
                **placed,
            )
        if "focus" in outputs:
            spacing = source.z_scale if result.focus_unit == "physical" else 1.0
            top = float(max(source.n_planes - 1, 1)) * spacing
            self._put(
                f"{source.name} focus map",
                result.focus_map,
                colormap="turbo",
                contrast_limits=(min(0.0, top), max(0.0, top)),
                metadata={
                    **metadata,
                    "focus_unit": source.focus_unit,
                    "z_spacing": spacing if result.focus_unit == "physical" else None,
                },
                **placed,
            )
        if "fused" in outputs:
            fused = result.fused
            props: dict[str, Any] = {"rgb": source.rgb, "contrast_limits": source.contrast_limits}
            if not source.rgb:
                props["colormap"] = source.colormap
            if source.channel is not None:  # (Y, X, C) → (C, Y, X), where the source had them
                fused = np.moveaxis(fused, -1, 0)
                scale, translate, label = source.channel
                placed = {
                    "scale": (scale, *source.scale),
                    "translate": (translate, *source.translate),
                    "axis_labels": (label, *source.axis_labels),
                }
                if source.units is not None:
                    placed["units"] = ("pixel", *source.units)
            self._put(f"{source.name} fused", fused, metadata=metadata, **props, **placed)
        if f"{source.name} height view" in self.viewer.layers:
            self.show_height_view()

    def _put(self, name: str, data: np.ndarray, *, visible: bool = True, **props: Any) -> Image:
        layers = self.viewer.layers
        rgb = props.pop("rgb", False)
        old = next((layer for layer in layers if layer.name == name), None)
        if isinstance(old, Image) and old.rgb == rgb and old.data.ndim == data.ndim:
            old.data = data
            limits = props.pop("contrast_limits")
            old.reset_contrast_limits_range()
            old.contrast_limits = limits
            for key, value in props.items():
                setattr(old, key, value)
            return old
        layer = Image(data, name=name, rgb=rgb, visible=visible, **props)
        _replace(layers, old, layer)
        return layer

    def show_height_view(self) -> Surface | None:
        """Add (or update) "<name> height view": the focus map as a 3-D surface coloured with
        the fused image, and switch the viewer to 3-D."""
        if self.last is None:
            show_error("Fuse a stack first; the height view shows its focus map in 3-D.")
            return None
        source, result = self.last
        z_scale = (1.0 if result.focus_unit == "physical" else source.z_scale) * self.relief.value
        fused = result.fused
        vertices, faces, colors = height_surface(
            result.focus_map,
            fused,
            result.confidence,
            z_scale=z_scale,
            yx_scale=source.scale,
            rgb=source.rgb,
            contrast_limits=None if source.rgb else source.contrast_limits,
        )
        layer = Surface(
            (vertices, faces),
            vertex_colors=colors,
            name=f"{source.name} height view",
            translate=(source.z_translate, *source.translate),
            shading="smooth",
            metadata={"source": source.name, "method": result.method, "z_scale": z_scale},
        )
        old = next((item for item in self.viewer.layers if item.name == layer.name), None)
        _replace(self.viewer.layers, old, layer)
        self.viewer.dims.ndisplay = 3
        self.viewer.reset_view()
        # Look down on the surface from the front and a little from the side, Y still down.
        camera = getattr(self.viewer, "scene", self.viewer).camera  # viewer.scene since 0.9
        camera.set_view_direction((-1.0, -0.6, 0.3), up_direction=(1.0, 0.0, 0.0))
        return layer


def _replace(layers: Any, old: Any, layer: Any) -> None:
    """Append ``layer``, or put it where ``old`` (same name, other kind) was."""
    if old is None:
        layers.append(layer)
        return
    index = layers.index(old)
    layers.remove(old)
    layers.insert(index, layer)
