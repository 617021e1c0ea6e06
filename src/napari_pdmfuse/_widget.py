"""The "PDM Fuse" dock widget: a thin napari front end over :func:`napari_pdmfuse.fuse_iter`
and, for time points, channel options and alignment, :func:`.hyperstack.fuse_hyperstack_iter`.

The widget only collects the options, runs the core's generator in a napari ``thread_worker``,
shows its progress and puts the results into the viewer; every computation happens in the core
(:mod:`napari_pdmfuse.fusion`, :mod:`napari_pdmfuse.hyperstack`) or in Qt-free helpers
(:mod:`napari_pdmfuse.height_view`). This and napari itself are the only places that import Qt.
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
from napari.utils.notifications import show_error, show_info

from .align import MODELS, report
from .errors import InputError, PdmFuseError
from .fusion import FusionResult, Progress, fuse_iter
from .height_view import height_surface
from .hyperstack import CHANNEL_MODES, HyperstackResult, fuse_hyperstack_iter
from .methods import DEFAULT_METHOD, METHODS

DEVICES = ("auto", "cpu", "cuda")
STACK, PLANES = "stack", "planes"
NO_CHANNEL = -1
NO_AXIS = -1
ALIGN_OFF = "off"
CHANNEL_LABELS = ("c", "ch", "channel", "channels")
TIME_LABELS = ("t", "time", "frame", "frames")


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


def fuse_hyperstack_or_fail(
    data: Any, axes: str, **options: Any
) -> Generator[Progress, None, HyperstackResult | Failure]:
    """Run :func:`fuse_hyperstack_iter` (time points, channel modes, alignment) likewise."""
    try:
        return (yield from fuse_hyperstack_iter(data, axes, **options))
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
    """The axis labelled as channels, else the only axis left besides Z, Y, X (and an axis
    labelled as time), else none."""
    if layer.rgb:
        return NO_CHANNEL
    labels = [str(a).lower() for a in layer.axis_labels]
    candidates = [i for i in stack_axes(layer) if i != z_axis and labels[i] not in TIME_LABELS]
    labelled = [i for i in candidates if labels[i] in CHANNEL_LABELS]
    if labelled:
        return labelled[0]
    return candidates[0] if len(candidates) == 1 else NO_CHANNEL


def default_time_axis(layer: Image, z_axis: int, channel_axis: int | None) -> int:
    """The axis labelled as time (t, time, frame), if it is not Z or the channels; else none."""
    labels = [str(a).lower() for a in layer.axis_labels]
    taken = (z_axis, channel_axis)
    return next(
        (i for i in stack_axes(layer) if labels[i] in TIME_LABELS and i not in taken), NO_AXIS
    )


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
    #: Placement of the hyperstack's T and C axes: letter → (scale, translate, label, unit).
    leading: dict[str, tuple[float, float, str, Any]] = field(default_factory=dict, compare=False)

    def placement(self, axes: str) -> dict[str, Any]:
        """Scale, translate, labels (and units) of a result whose axes are ``axes`` ("TCYX")."""
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


@dataclass(frozen=True)
class Job:
    """The arguments of one fusion run, checked on the main thread before the worker starts."""

    data: Any
    source: Source
    options: dict[str, Any]
    axes: str | None = None  # set for a hyperstack run (time points, channel modes, alignment)


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


def stack_job(
    layer: Image,
    z_axis: int,
    channel_axis: int | None,
    time_axis: int | None = None,
    *,
    channel_mode: str = "combined",
    focus_channel: int | None = None,
    align: str | None = None,
    **options: Any,
) -> Job:
    """A run over one layer with a Z axis: checks the layout and reads its placement.

    With a time axis, a channel mode or focus channel other than the default, or alignment,
    the run goes through :func:`fuse_hyperstack_iter` and its results keep the T axis.
    """
    hyper = (
        time_axis is not None
        or align is not None
        or channel_mode != "combined"
        or focus_channel is not None
    )
    if hyper:
        return _hyperstack_job(
            layer,
            z_axis,
            channel_axis,
            time_axis,
            {"channel_mode": channel_mode, "focus_channel": focus_channel, "align": align},
            options,
        )
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
            "or its time axis, so that only Z, Y and X are left."
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


def _hyperstack_job(
    layer: Image,
    z_axis: int,
    channel_axis: int | None,
    time_axis: int | None,
    hyper_options: dict[str, Any],
    options: dict[str, Any],
) -> Job:
    """A run over a layer with time points, channel options or alignment (see stack_job)."""
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
    if ndim != 2 + len(chosen):
        raise InputError(
            f"Layer {layer.name!r} has {ndim} dimensions besides colour; choose its channel axis "
            "or its time axis, so that only Z, Y and X are left."
        )
    letters = {axis: letter for letter, axis in named.items() if axis is not None}
    axes = "".join(letters.get(i, "") for i in range(ndim - 2)) + "YX" + ("S" * bool(layer.rgb))
    z_scale = float(layer.scale[z_axis])
    data = full_data(layer)
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
    source = Source(
        name=layer.name,
        n_planes=int(data.shape[z_axis]),
        z_scale=z_scale,
        z_translate=float(layer.translate[z_axis]),
        z_unit=unit_label(layer.units[z_axis]),
        layers=(layer.name,),
        leading=leading,
        **_placement(layer),
    )
    physical = source.physical_z
    options = {**options, **hyper_options, "z_spacing": z_scale if physical else None}
    return Job(data, source, options, axes=axes)


def planes_job(layers: Sequence[Image], align: str | None = None, **options: Any) -> Job:
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
    if align is not None:  # alignment needs the planes as one array: stacked lazily
        import dask.array as da

        stacked = da.stack([da.asarray(plane) for plane in data])
        axes = "ZYX" + ("S" if source.rgb else "")
        return Job(stacked, source, {**options, "align": align}, axes=axes)
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
        self.time_axis = ComboBox(label="time axis", choices=self._time_choices)
        self.time_axis.tooltip = "Fuse every time point; the results keep this axis."
        self.channel_mode = ComboBox(label="channel mode", choices=CHANNEL_MODES, value="combined")
        self.channel_mode.tooltip = (
            "combined: one focus map from all channels, followed by every channel; "
            "separate: each channel fused on its own, with its own focus map."
        )
        self.focus_channel = ComboBox(label="focus channel", choices=self._focus_channel_choices)
        self.focus_channel.tooltip = "The channel that decides focus for all (combined mode)."
        self.planes = Select(label="planes", choices=self._plane_choices, allow_multiple=True)
        self.planes.tooltip = "2-D layers, fused as focal planes in the order listed here."
        self.align = ComboBox(label="align", choices=(ALIGN_OFF, *MODELS), value=ALIGN_OFF)
        self.align.tooltip = (
            "Register the planes to the middle one before fusing: translation (stage drift) or "
            "similarity (drift and focus breathing)."
        )
        self.brightness = CheckBox(text="correct brightness between planes", value=False)
        self.brightness.tooltip = (
            "Even out lamp flicker or bleaching between planes, in the focus decision and the "
            "fused image alike."
        )
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
                self.time_axis,
                self.channel_mode,
                self.focus_channel,
                self.planes,
                self.align,
                self.brightness,
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
        self.last: tuple[Source, FusionResult | HyperstackResult] | None = None
        self.mode.changed.connect(self._on_mode)
        self.image.changed.connect(self._on_layer)
        self.z_axis.changed.connect(lambda _: self._reset_channel())
        self.channel_axis.changed.connect(lambda _: self._reset_time())
        self.channel_mode.changed.connect(lambda _: self._reset_time())
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

    def _time_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        choices = [("none", NO_AXIS)]
        if isinstance(layer, Image):
            taken = (self.z_axis.value, self.channel_axis.value)
            choices += [_axis_choice(layer, a) for a in stack_axes(layer) if a not in taken]
        return choices

    def _focus_channel_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        choices = [("all channels", NO_CHANNEL)]
        channel = self.channel_axis.value
        if isinstance(layer, Image) and channel not in (None, NO_CHANNEL) and channel < layer.ndim:
            choices += [(str(k), k) for k in range(int(layer.data.shape[channel]))]
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
        self._reset_time(default=default)

    def _reset_time(self, default: bool = False) -> None:
        """Follow the Z and channel axes: time-axis choices, and the channel options."""
        layer = self.image.value
        previous = self.time_axis.value
        self.time_axis.reset_choices()
        valid = [value for _, value in self._time_choices()]
        if isinstance(layer, Image) and (default or previous not in valid):
            channel = self.channel_axis.value
            self.time_axis.value = default_time_axis(
                layer, self.z_axis.value, None if channel in (None, NO_CHANNEL) else channel
            )
        stack = self.mode.value == STACK and isinstance(layer, Image)
        self.time_axis.visible = stack and layer.ndim >= 4
        self.focus_channel.reset_choices()
        channels = stack and self.channel_axis.value not in (None, NO_CHANNEL)
        self.channel_mode.visible = self.focus_channel.visible = channels
        self.focus_channel.enabled = self.channel_mode.value == "combined"

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
            "correct_brightness": self.brightness.value,
        }
        align = None if self.align.value == ALIGN_OFF else self.align.value
        if self.mode.value == PLANES:
            order = list(self.viewer.layers)
            chosen = sorted(self.planes.value, key=order.index)
            return planes_job(chosen, align=align, **options)
        layer = self.image.value
        if layer is None:
            raise InputError("Choose an image layer holding a focus stack to fuse.")
        channel = self.channel_axis.value
        channel = None if channel in (None, NO_CHANNEL) else int(channel)
        time_axis = self.time_axis.value
        time_axis = None if time_axis in (None, NO_AXIS) or layer.ndim < 4 else int(time_axis)
        mode, focus = "combined", None
        if channel is not None:  # the channel options apply only where there are channels
            mode = self.channel_mode.value
            chosen_focus = self.focus_channel.value
            if mode == "combined" and chosen_focus not in (None, NO_CHANNEL):
                focus = int(chosen_focus)
        return stack_job(
            layer,
            int(self.z_axis.value if self.z_axis.value is not None else 0),
            channel,
            time_axis,
            channel_mode=mode,
            focus_channel=focus,
            align=align,
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
        if job.axes is None:
            worker = create_worker(
                fuse_or_fail,
                job.data,
                **job.options,
                _ignore_errors=True,  # bugs still reach napari's error notifications
            )
        else:
            worker = create_worker(
                fuse_hyperstack_or_fail,
                job.data,
                job.axes,
                **job.options,
                _ignore_errors=True,
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

    def _on_returned(
        self, source: Source, result: FusionResult | HyperstackResult | Failure
    ) -> None:
        if isinstance(result, Failure):
            self._set_status("Failed.")
            show_error(result.message)
            return
        done = f"Fused {source.name!r} with {result.method}; focus map in {source.focus_unit}."
        if isinstance(result, HyperstackResult):
            self.show_hyperstack_result(source, result)
            if result.transforms is not None:
                done += " " + alignment_summary(result)
                show_info(alignment_report(result))
        else:
            self.show_result(source, result)
        self._set_status(done)

    # -- results --------------------------------------------------------------------------------

    def show_result(self, source: Source, result: FusionResult) -> None:
        """Add the chosen result layers, or update those of an earlier run on the same source."""
        self.last = (source, result)
        self.height_button.enabled = True
        placed: dict[str, Any] = {
            "scale": source.scale,
            "translate": source.translate,
            "axis_labels": source.axis_labels,
        }
        if source.units is not None:
            placed["units"] = source.units
        metadata = {"source": source.name, "method": result.method, "planes": source.layers}
        self._put_maps(source, result, metadata, placed)
        if "fused" in self.outputs():
            fused = result.fused
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
            self._put_fused(source, fused, metadata, placed)
        if f"{source.name} height view" in self.viewer.layers:
            self.show_height_view()

    def show_hyperstack_result(self, source: Source, result: HyperstackResult) -> None:
        """Like :meth:`show_result`, for results that keep time points (and channels) in their
        own axes; adds a hidden "<name> coverage" layer when the planes were aligned."""
        self.last = (source, result)
        self.height_button.enabled = True
        metadata: dict[str, Any] = {
            "source": source.name,
            "method": result.method,
            "planes": source.layers,
        }
        if result.transforms is not None:
            metadata["alignment"] = alignment_report(result)
        maps = {**metadata, "axes": result.map_axes}
        self._put_maps(source, result, maps, source.placement(result.map_axes))
        if "fused" in self.outputs():
            fused = {**metadata, "axes": result.axes}
            place = source.placement(result.axes.replace("S", ""))
            self._put_fused(source, result.fused, fused, place)
        name = f"{source.name} coverage"
        if result.coverage is not None:
            axes = "T" * (result.coverage.ndim == 3) + "YX"
            self._put(
                name,
                result.coverage.astype(np.uint8),
                colormap="gray",
                contrast_limits=(0.0, 1.0),
                metadata={**metadata, "axes": axes},
                visible=False,
                **source.placement(axes),
            )
        elif name in self.viewer.layers:  # from an earlier, aligned run: no longer true
            self.viewer.layers.remove(name)
        if f"{source.name} height view" in self.viewer.layers:
            self.show_height_view()

    def _put_maps(
        self,
        source: Source,
        result: FusionResult | HyperstackResult,
        metadata: dict[str, Any],
        placed: dict[str, Any],
    ) -> None:
        """The confidence and focus-map layers that were asked for (hidden confidence)."""
        outputs = self.outputs()
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
            physical = result.focus_unit == "physical"
            spacing = source.z_scale if physical else 1.0
            top = float(max(source.n_planes - 1, 1)) * spacing
            self._put(
                f"{source.name} focus map",
                result.focus_map,
                colormap="turbo",
                contrast_limits=(min(0.0, top), max(0.0, top)),
                metadata={
                    **metadata,
                    "focus_unit": source.focus_unit,
                    "z_spacing": spacing if physical else None,
                },
                **placed,
            )

    def _put_fused(
        self, source: Source, fused: np.ndarray, metadata: dict[str, Any], placed: dict[str, Any]
    ) -> None:
        """The fused layer, shown like its source (RGB, colormap, contrast limits)."""
        props: dict[str, Any] = {"rgb": source.rgb, "contrast_limits": source.contrast_limits}
        if not source.rgb:
            props["colormap"] = source.colormap
        self._put(f"{source.name} fused", fused, metadata=metadata, **props, **placed)

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
        if isinstance(result, HyperstackResult):
            result = self._shown_time_point(source, result)
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

    def _shown_time_point(self, source: Source, result: HyperstackResult) -> FusionResult:
        """The time point (and, fused separately, the channel) of a hyperstack result that the
        viewer shows now, as a 2-D result for the height view."""
        lead = result.map_axes[:-2]
        index = [0] * len(lead)
        shape = result.focus_map.shape
        shown = [
            layer
            for layer in self.viewer.layers
            if layer.name in (f"{source.name} focus map", f"{source.name} confidence")
        ]
        if lead and shown and shown[0].ndim == len(shape):
            layer = shown[0]
            point = layer.world_to_data(self.viewer.dims.point)
            index = [int(np.clip(round(point[i]), 0, shape[i] - 1)) for i in range(len(lead))]
        where = dict(zip(lead, index, strict=True))
        focus = result.focus_map[tuple(index)]
        confidence = result.confidence[tuple(index)]
        fused = result.fused
        axes = result.axes
        if "T" in axes:
            fused = np.take(fused, where["T"], axis=axes.index("T"))
            axes = axes.replace("T", "")
        if "C" in axes:
            if "C" in lead:  # fused separately: the channel whose focus map is shown
                fused = np.take(fused, where["C"], axis=axes.index("C"))
            else:
                fused = np.moveaxis(fused, axes.index("C"), -1)
        return FusionResult(fused, focus, confidence, result.method, result.focus_unit)


def alignment_summary(result: HyperstackResult) -> str:
    """One sentence: how far the planes moved, and how much of the field all of them cover."""
    planes = [t for time_point in result.transforms or [] for t in time_point]
    shift = max((float(np.hypot(t.dy, t.dx)) for t in planes), default=0.0)
    scales = [t.scale for t in planes] or [1.0]
    covered = 100 * float(np.mean(result.coverage)) if result.coverage is not None else 100.0
    return (
        f"Aligned: shifts up to {shift:.1f} px, scale {min(scales):.4f} to {max(scales):.4f}, "
        f"all planes cover {covered:.0f} % of the field."
    )


def alignment_report(result: HyperstackResult) -> str:
    """The alignment table of every time point, as :func:`napari_pdmfuse.align.report` has it."""
    transforms = result.transforms or []
    if len(transforms) == 1:
        return "Alignment (reference: the middle plane)\n" + report(transforms[0])
    return "\n".join(f"Time point {t}\n{report(planes)}" for t, planes in enumerate(transforms))


def _replace(layers: Any, old: Any, layer: Any) -> None:
    """Append ``layer``, or put it where ``old`` (same name, other kind) was."""
    if old is None:
        layers.append(layer)
        return
    index = layers.index(old)
    layers.remove(old)
    layers.insert(index, layer)
