"""The "PDM Fuse" dock widget: choices, a progress bar and a cancel button, nothing more.

The widget turns its choices into one run (:mod:`.jobs`), runs :func:`.jobs.fuse_run` in a
napari ``thread_worker`` and hands what comes back to :mod:`.layers`; every computation happens
in the core or in those Qt-free modules. "Open stack…" opens a file or folder with the
plugin's reader (:func:`napari_pdmfuse._reader.read_layers`), lazily and without napari's
question of which reader to use. The tools for a finished result are panels of their own
(:mod:`.model_panel`, :mod:`.retouch_panel`, :mod:`.review_panel`) over Qt-free modules. This,
its file dialog (:mod:`.open_dialog`), those panels and napari itself are the only places that
import Qt.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import napari
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
from napari.layers import Image, Layer, Surface
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_info

from .._reader import read_layers
from ..errors import InputError, PdmFuseError
from ..heap import give_back_freed_memory
from ..methods import DEFAULT_METHOD
from ..options import (
    ALIGN_MODELS,
    CHANNEL_MODES,
    DEFAULT_SELECTION,
    DEVICES,
    METHODS,
    SELECTIONS,
)
from ..planning import Progress
from . import layers
from .jobs import Failure, Outcome, Run, fuse_run, layer_run, planes_run, without_stores
from .open_dialog import ask_stack_path
from .sources import (
    default_channel_axis,
    default_time_axis,
    default_z_axis,
    full_data,
    stack_axes,
)

STACK, PLANES = "stack", "planes"
NO_AXIS = -1
ALIGN_OFF = "off"


def usable_devices() -> tuple[str, ...]:
    """The devices this machine offers PDMNet: auto and cpu, and CUDA or MPS when present."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    present = {"cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available())}
    return tuple(d for d in DEVICES if present.get(d, True))


def _delegated(steps: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """``steps``, run by a worker that does not own them, so the widget can close them once the
    worker has finished: a cancelled worker leaves its generator suspended, holding the stack
    and the results so far, and napari keeps every worker until it quits."""
    return (yield from steps)


def _closed(steps: Generator[Any, None, Any]) -> None:
    """Close a finished or cancelled run, then give back what its tiles freed (the worker
    thread's heap keeps it otherwise)."""
    try:
        steps.close()
    finally:
        give_back_freed_memory()


def _axis_choice(layer: Image, axis: int) -> tuple[str, int]:
    return f"{axis}: {layer.axis_labels[axis]} ({layer.data.shape[axis]})", axis


def _chosen(value: Any) -> int | None:
    return None if value in (None, NO_AXIS) else int(value)


class FuseWidget(Container):
    """Fuse a Z stack — one layer with a Z axis, or 2-D layers as planes — and add or update
    "<name> fused", "… focus map" and "… confidence" layers, and on demand a 3-D height view."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        from ..model.device import describe_devices

        self.viewer = napari_viewer
        #: Asks for the file or folder "Open stack…" opens (None: cancelled); replaceable.
        self.choose_path: Callable[[], str | Path | None] = lambda: ask_stack_path(self.native)
        self.open_button = PushButton(text="Open stack…")
        self.open_button.tooltip = (
            "Open a TIFF, OME-TIFF, OME-Zarr, CZI, ND2 or LIF stack, or a folder of planes, "
            "lazily (read as it is shown and fused), and fuse it from here."
        )
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
        self.align = ComboBox(label="align", choices=(ALIGN_OFF, *ALIGN_MODELS), value=ALIGN_OFF)
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
        self.selection = ComboBox(label="selection", choices=SELECTIONS, value=DEFAULT_SELECTION)
        self.selection.tooltip = (
            "PDMNet: blend weights the slices at each pixel; hard copies each pixel from the "
            "slice of highest weight, so every value is one the stack holds."
        )
        self.device = ComboBox(label="device", choices=usable_devices(), value="auto")
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
        from .model_panel import ModelPanel
        from .retouch_panel import RetouchPanel
        from .review_panel import ReviewPanel

        self.model = ModelPanel(self)
        self.retouch = RetouchPanel(self)
        self.review = ReviewPanel(self)
        self.extend(
            [
                self.open_button,
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
                self.selection,
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
                self.model,
                self.retouch,
                self.review,
            ]
        )
        self.worker: GeneratorWorker | None = None
        self.steps: Generator[Any, None, Any] | None = None  # the worker's run, to close
        self.activity: progress | None = None
        self.streaming: Outcome | None = None  # a streamed run's layers, while it runs
        self.last: Outcome | None = None
        # The folder of each source's streamed result, by source name, to delete when the source
        # is fused again: the folder only, for an Outcome holds its source's data (and open
        # files) long after the user has removed its layers.
        self.folders: dict[str, Path] = {}
        self.open_button.changed.connect(self.open_stack)
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

    # -- opening --------------------------------------------------------------------------------

    def open_stack(self) -> Image | None:
        """The "Open stack…" button: ask for a file or folder and open it (:meth:`open_path`)."""
        path = self.choose_path()
        return self.open_path(path) if path else None

    def open_path(self, path: str | Path) -> Image | None:
        """Open a stack file or folder with the plugin's reader, lazily and without asking
        which reader, and make it the source; None (and a notification) if it holds no stack."""
        try:
            found = read_layers(path, stacks_only=True)
        except PdmFuseError as err:
            show_error(str(err))
            return None
        layer = self.viewer.add_layer(Layer.create(*found[0]))
        self.mode.value = STACK
        self.image.reset_choices()
        self.image.value = layer
        shape = " × ".join(map(str, full_data(layer).shape))
        axes = ", ".join(map(str, layer.axis_labels))
        self._set_status(f"Opened {layer.name!r} ({shape}: {axes}), read as shown and fused.")
        return layer

    # -- choices --------------------------------------------------------------------------------

    def _z_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        if not isinstance(layer, Image):
            return []
        return [_axis_choice(layer, axis) for axis in stack_axes(layer)]

    def _channel_choices(self, _widget: Any = None) -> list[tuple[str, int]]:
        layer = self.image.value
        choices = [("none" if not getattr(layer, "rgb", False) else "none (RGB)", NO_AXIS)]
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
        choices = [("all channels", NO_AXIS)]
        channel = _chosen(self.channel_axis.value)
        if isinstance(layer, Image) and channel is not None and channel < layer.ndim:
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
        """A new layer is chosen: default its Z axis (labelled z, else the first long axis)."""
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
            channel = default_channel_axis(layer, self.z_axis.value)
            self.channel_axis.value = NO_AXIS if channel is None else channel
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
            channel = _chosen(self.channel_axis.value)
            time = default_time_axis(layer, self.z_axis.value, channel)
            self.time_axis.value = NO_AXIS if time is None else time
        stack = self.mode.value == STACK and isinstance(layer, Image)
        self.time_axis.visible = stack and layer.ndim >= 4
        self.focus_channel.reset_choices()
        channels = stack and _chosen(self.channel_axis.value) is not None
        self.channel_mode.visible = self.focus_channel.visible = channels
        self.focus_channel.enabled = self.channel_mode.value == "combined"

    def _on_method(self, method: str) -> None:
        # Only PDMNet runs on a device and has slice weights to blend or select from; the
        # classical methods are numpy on the CPU and pick or mix slices their own way.
        self.device.enabled = self.selection.enabled = method == "pdmnet"

    # -- running --------------------------------------------------------------------------------

    def outputs(self) -> tuple[str, ...]:
        boxes = {
            "fused": self.out_fused,
            "focus_map": self.out_focus,
            "confidence": self.out_confidence,
        }
        return tuple(name for name, box in boxes.items() if box.value)

    def describe(self) -> Run:
        """The run the current choices describe; raises InputError with a sentence if none."""
        align = None if self.align.value == ALIGN_OFF else self.align.value
        pdmnet = self.method.value == "pdmnet"
        options = {
            "method": self.method.value,
            "selection": self.selection.value if pdmnet else DEFAULT_SELECTION,
            "device": self.device.value,
            "tile": int(self.tile.value) or None,
            "correct_brightness": self.brightness.value,
            "align": align,
            "outputs": self.outputs(),
        }
        if self.mode.value == PLANES:
            order = list(self.viewer.layers)
            return planes_run(sorted(self.planes.value, key=order.index), **options)
        layer = self.image.value
        if layer is None:
            raise InputError("Choose an image layer holding a focus stack to fuse.")
        channel = _chosen(self.channel_axis.value)
        time_axis = _chosen(self.time_axis.value) if layer.ndim >= 4 else None
        mode = self.channel_mode.value
        focus = _chosen(self.focus_channel.value) if mode == "combined" else None
        z_axis = int(self.z_axis.value if self.z_axis.value is not None else 0)
        return layer_run(
            layer, z_axis, channel, time_axis, channel_mode=mode, focus_channel=focus, **options
        )

    def run(self) -> GeneratorWorker | None:
        """Start fusing in a worker thread; returns the worker, if one started."""
        if self.worker is not None:
            return None
        if not self.outputs():
            show_error("Choose at least one output: fused, focus map or confidence.")
            return None
        try:
            run = self.describe()
        except PdmFuseError as err:
            show_error(str(err))
            return None
        # Bugs (not PdmFuseError) still reach napari's error notifications.
        self.steps = fuse_run(run)
        worker = create_worker(_delegated, self.steps, _ignore_errors=True)
        worker.yielded.connect(self._on_yielded)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.errored.connect(lambda _: self._discard("Failed."))
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.fuse_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.max, self.progress.value = 1, 0
        name = run.source.name
        self.activity = progress(total=0, desc=f"PDM Fuse: {name}")
        self._set_status(f"Fusing {name!r} with {run.options.method}…")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running fusion after its current tile; an in-memory run adds nothing, a
        streamed run's layers are removed with their stores."""
        if self.worker is not None:
            self.worker.quit()
            self._set_status("Cancelling…")

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _on_yielded(self, step: Progress | Outcome) -> None:
        if isinstance(step, Outcome):  # a streamed run starts: show its stores as they fill
            self.streaming = step
            layers.show(self.viewer, step)
            self._set_status(f"Fusing {step.source.name!r} into {step.folder}…")
            return
        self.progress.max = max(step.total, 1)
        self.progress.value = step.done
        if self.activity is not None:
            if self.activity.total != step.total:
                self.activity.total = step.total
            self.activity.update(step.done - self.activity.n)
        if self.streaming is not None:
            layers.refresh(self.viewer, self.streaming, step.done, step.total)

    def _on_returned(self, outcome: Outcome | Failure) -> None:
        if isinstance(outcome, Failure):
            self._discard("Failed.")
            show_error(outcome.message)
            return
        self.streaming = None
        source = outcome.source
        layers.show(self.viewer, outcome)
        previous = self.folders.pop(source.name, None)
        if previous is not None and previous != outcome.folder:
            without_stores(previous)  # its layers now show this run
        if outcome.folder is not None:
            self.folders[source.name] = outcome.folder
        self.last = outcome
        self.height_button.enabled = True
        for tool in (self.model, self.retouch, self.review):
            tool.follow(outcome)
        unit = source.focus_unit
        done = f"Fused {source.name!r} with {outcome.method}; focus map in {unit}."
        if outcome.streamed:
            done += f" The results are stored in {outcome.folder}."
        if outcome.transforms is not None:
            done += " " + layers.alignment_summary(outcome)
            show_info(layers.alignment_report(outcome.transforms))
        self._set_status(done)
        if f"{source.name} height view" in self.viewer.layers:
            self.show_height_view()

    def _on_aborted(self) -> None:
        streamed = self.streaming is not None
        self._discard("Cancelled; the partial results were removed." if streamed else "")
        if not streamed:
            self._set_status("Cancelled; the viewer is unchanged.")

    def _discard(self, status: str) -> None:
        """A run ended without results: remove a streamed run's partial layers and stores."""
        if self.streaming is not None:
            layers.remove(self.viewer, self.streaming)
            without_stores(self.streaming.folder)
            self.streaming = None
        self._set_status(status)

    def _on_finished(self) -> None:
        steps, self.steps = self.steps, None
        self.worker = None
        self.fuse_button.enabled = True
        self.cancel_button.enabled = False
        if self.activity is not None:
            self.activity.close()
            self.activity = None
        if steps is not None:
            # A cancelled run lets go of its memory and files now, in a thread of its own:
            # closing waits for the read of the next tile already under way (seconds on a
            # large or remote stack), which must not freeze the window.
            threading.Thread(target=_closed, args=(steps,), daemon=True).start()

    # -- height view ----------------------------------------------------------------------------

    def show_height_view(self) -> Surface | None:
        """Add (or update) "<name> height view": the focus map as a 3-D surface coloured with
        the fused image, and switch the viewer to 3-D."""
        if self.last is None:
            show_error("Fuse a stack first; the height view shows its focus map in 3-D.")
            return None
        try:
            return layers.height_view(self.viewer, self.last, self.relief.value)
        except PdmFuseError as err:
            show_error(str(err))
            return None
