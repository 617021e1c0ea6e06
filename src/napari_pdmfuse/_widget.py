"""The "PDM Fuse" dock widget: a thin napari front end over :func:`napari_pdmfuse.fuse_iter`.

The widget only collects the options, runs the core's generator in a napari ``thread_worker``,
shows its progress and puts the results into the viewer; every computation happens in the core.
This is the only module of the package that imports napari and Qt.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, create_widget
from napari.layers import Image
from napari.qt.threading import GeneratorWorker, create_worker
from napari.utils.notifications import show_error

from .errors import InputError, PdmFuseError
from .fusion import FusionResult, Progress, fuse_iter
from .methods import DEFAULT_METHOD, METHODS

DEVICES = ("auto", "cpu", "cuda")


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


@dataclass(frozen=True)
class Source:
    """What the results take from the layer they were fused from, read when the run starts."""

    name: str
    rgb: bool
    n_planes: int
    scale: tuple[float, float]
    translate: tuple[float, float]
    contrast_limits: tuple[float, float]
    colormap: Any

    @classmethod
    def of(cls, layer: Image) -> Source:
        return cls(
            name=layer.name,
            rgb=bool(layer.rgb),
            n_planes=int(stack_data(layer).shape[0]),
            scale=tuple(layer.scale[-2:]),
            translate=tuple(layer.translate[-2:]),
            contrast_limits=tuple(layer.contrast_limits),
            colormap=layer.colormap,
        )


def stack_data(layer: Image) -> Any:
    """The layer's full-resolution data, checked to be one focus stack with Z first."""
    data = layer.data[0] if layer.multiscale else layer.data
    expected = 4 if layer.rgb else 3
    if data.ndim < expected:
        raise InputError(
            f"Layer {layer.name!r} is a single 2-D image; choose a layer with a Z axis "
            "(a 3-D stack, grey or RGB) to fuse."
        )
    if data.ndim > expected:
        raise InputError(
            f"Layer {layer.name!r} has {layer.ndim} dimensions; the widget fuses 3-D stacks "
            "(Z, Y, X), grey or RGB, so fuse other layouts with napari_pdmfuse.fuse and its "
            "z_axis and channel_axis options."
        )
    return data


class FuseWidget(Container):
    """Fuse the chosen image layer's Z stack; add or update "<name> fused", "… focus map" and
    "… confidence" layers."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.image = create_widget(annotation=Image, label="image")
        self.method = ComboBox(label="method", choices=METHODS, value=DEFAULT_METHOD)
        self.device = ComboBox(label="device", choices=DEVICES, value="auto")
        self.fuse_button = PushButton(text="Fuse")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.status = Label(label="", value="")
        self.extend(
            [
                self.image,
                self.method,
                self.device,
                self.fuse_button,
                self.cancel_button,
                self.progress,
                self.status,
            ]
        )
        self.worker: GeneratorWorker | None = None
        self.method.changed.connect(self._on_method)
        self.fuse_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self._on_method(self.method.value)

    def _on_method(self, method: str) -> None:
        # Only PDMNet runs on a device; the classical methods are numpy on the CPU.
        self.device.enabled = method == "pdmnet"

    # -- running --------------------------------------------------------------------------------

    def run(self) -> GeneratorWorker | None:
        """Start fusing the chosen layer in a worker thread; returns the worker, if one started."""
        if self.worker is not None:
            return None
        layer = self.image.value
        if layer is None:
            show_error("Choose an image layer holding a focus stack to fuse.")
            return None
        try:
            data = stack_data(layer)
            source = Source.of(layer)
        except PdmFuseError as err:
            show_error(str(err))
            return None
        worker = create_worker(
            fuse_or_fail,
            data,
            method=self.method.value,
            rgb=source.rgb,
            device=self.device.value,
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
        self._set_status(f"Fusing {source.name!r} with {self.method.value}…")
        worker.start()
        return worker

    def cancel(self) -> None:
        """Stop the running fusion after its current tile; nothing is added to the viewer."""
        if self.worker is not None:
            self.worker.quit()
            self._set_status("Cancelling…")

    def _set_status(self, text: str) -> None:
        self.status.value = text

    def _on_progress(self, progress: Progress) -> None:
        self.progress.max = max(progress.total, 1)
        self.progress.value = progress.done

    def _on_finished(self) -> None:
        self.worker = None
        self.fuse_button.enabled = True
        self.cancel_button.enabled = False

    def _on_returned(self, source: Source, result: FusionResult | Failure) -> None:
        if isinstance(result, Failure):
            self._set_status("Failed.")
            show_error(result.message)
            return
        self.show_result(source, result)
        self._set_status(f"Fused {source.name!r} with {result.method}.")

    # -- results --------------------------------------------------------------------------------

    def show_result(self, source: Source, result: FusionResult) -> None:
        """Add the result layers, or update those of an earlier run on the same source."""
        placed = {"scale": source.scale, "translate": source.translate}
        metadata = {"source": source.name, "method": result.method}
        self._put(
            f"{source.name} confidence",
            result.confidence,
            colormap="gray",
            contrast_limits=(0.0, 1.0),
            metadata=metadata,
            visible=False,
            **placed,
        )
        self._put(
            f"{source.name} focus map",
            result.focus_map,
            colormap="turbo",
            contrast_limits=(0.0, float(max(source.n_planes - 1, 1))),
            metadata={**metadata, "focus_unit": result.focus_unit},
            **placed,
        )
        fused: dict[str, Any] = {"rgb": source.rgb, "contrast_limits": source.contrast_limits}
        if not source.rgb:
            fused["colormap"] = source.colormap
        self._put(f"{source.name} fused", result.fused, metadata=metadata, **fused, **placed)

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
        if old is None:
            layers.append(layer)
        else:  # same name but another kind of layer: replace it where it was
            index = layers.index(old)
            layers.remove(old)
            layers.insert(index, layer)
        return layer
