"""The widget's retouch controls: pick a source, paint on a Labels layer, save the mask.

Painting is napari's own: a Labels layer ``<name> retouch`` the size of the result, drawn as
outlines so the retouched pixels show through, whose label says where each pixel comes from
(label k: plane k; labels above the plane count: another fusion). Its events drive a
:class:`~.retouching.RetouchSession`: each dab's ``labels_update`` names the window painted,
and napari's undo and redo (which re-set the layer's data) are found in the painted blocks;
the fused image and focus map are recomputed there only and their layers redrawn.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image, Labels
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info

from ..errors import PdmFuseError
from ..retouch import OTHER_FUSIONS, OtherFusion, relative
from . import layers
from .jobs import Failure, Outcome, fuse_run
from .retouching import (
    RetouchSession,
    Window,
    around,
    region_of_offset,
    single_stack,
    within,
)

#: Side (px) of the layer that shows a stroke while it is painted.
PREVIEW = 1024


class RetouchPanel(Container):
    """Retouch the last fusion: a source to take pixels from, brightness matching, the mask."""

    def __init__(self, widget: Any) -> None:
        super().__init__(labels=True)
        self.widget = widget
        self.viewer = widget.viewer
        self.outcome: Outcome | None = None
        self.session: RetouchSession | None = None
        self.layer: Labels | None = None
        self.worker: Any = None
        self.preview: Image | None = None  # the stroke being painted, over the fused image
        self.stroke: Window | None = None  # the window of the result the preview shows
        self.source = ComboBox(label="retouch from", choices=self._choices)
        self.source.tooltip = (
            "Paint on the '… retouch' layer to take these pixels from one plane or from another "
            "fusion of the same stack; label 0 (the eraser) keeps the fusion."
        )
        self.match = CheckBox(text="match brightness of taken planes", value=False)
        self.match.tooltip = (
            "Scale each taken plane to the local brightness of the fusion around the painted "
            "region (for lamp flicker or bleaching between planes)."
        )
        self.start_button = PushButton(text="Retouch", enabled=False)
        self.mask_file = FileEdit(label="mask file", mode="w", filter="*.tif")
        self.save_button = PushButton(text="Save mask", enabled=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [self.source, self.match, self.start_button, self.mask_file, self.save_button,
             self.status]
        )  # fmt: skip
        self.source.changed.connect(self._on_source)
        self.match.changed.connect(self._on_match)
        self.start_button.changed.connect(self.start)
        self.save_button.changed.connect(lambda: self.save())

    # -- following the widget ------------------------------------------------------------------

    def follow(self, outcome: Outcome) -> None:
        """A fusion finished: retouch it from now on (ending the retouch of an earlier one)."""
        self.stop()
        self.outcome = outcome
        self.source.reset_choices()
        try:
            single_stack(outcome)
        except PdmFuseError as err:
            self.start_button.enabled = False
            self.status.value = str(err)
            return
        self.start_button.enabled = True
        self.status.value = ""

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        outcome = self.outcome
        if outcome is None:
            return []
        planes = [(f"plane {k}", k) for k in range(1, outcome.source.n_planes + 1)]
        own = OtherFusion(outcome.method, outcome.run.options.selection)
        others = [(f"{o.name} fusion", o) for o in OTHER_FUSIONS if o != own]
        return planes + others

    # -- the session -------------------------------------------------------------------------

    def start(self) -> Labels | None:
        """Add the retouch layer over the result (or take up the one there) and start."""
        if self.outcome is None:
            return None
        self.stop()
        try:
            name = f"{self.outcome.source.name} retouch"
            old = next((layer for layer in self.viewer.layers if layer.name == name), None)
            labels = old.data if isinstance(old, Labels) and old.ndim == 2 else None
            session = RetouchSession(self.outcome, labels)
        except PdmFuseError as err:
            show_error(str(err))
            return None
        self.session = session
        self._add_preview()
        self.layer = self._layer(name, session)
        session.set_match_brightness(bool(self.match.value))
        if labels is not None and session.sync(everywhere=True) is not None:
            self._redraw()
        self.save_button.enabled = True
        self._on_source(self.source.value)
        return self.layer

    def _layer(self, name: str, session: RetouchSession) -> Labels:
        """The Labels layer the user paints on, above the results, drawn as outlines."""
        source = self.outcome.source
        layer_list = self.viewer.layers
        if name in layer_list and layer_list[name].data is session.labels:
            layer = layer_list[name]
        else:
            if name in layer_list:
                layer_list.remove(name)
            layer = Labels(session.labels, name=name, opacity=0.8, **source.placement("YX"))
            layer_list.append(layer)
        layer.contour = 2
        layer.brush_size = 25
        layer.metadata["retouch"] = True
        layer.events.labels_update.connect(self._on_labels_update)
        layer.events.set_data.connect(self._on_set_data)
        layer.events.paint.connect(self._on_set_data)
        layer.events.data.connect(self._on_data)
        self.viewer.layers.selection.active = layer
        return layer

    def stop(self) -> None:
        """End the retouch session (the painted layer and the result stay as they are)."""
        if self.layer is not None:
            for event, handler in (
                ("labels_update", self._on_labels_update),
                ("set_data", self._on_set_data),
                ("paint", self._on_set_data),
                ("data", self._on_data),
            ):
                getattr(self.layer.events, event).disconnect(handler)
        self._remove_preview()
        if self.session is not None:
            self.session.close()
        self.session = self.layer = None
        self.save_button.enabled = False

    # -- events ------------------------------------------------------------------------------

    def _on_labels_update(self, event: Any) -> None:
        """A dab: update its window, and show it at once in the stroke's preview."""
        if self.session is not None:
            region = region_of_offset(event.offset, event.data.shape, self.session.shape_yx)
            self._apply(lambda: self.session.sync(region), live=True)

    def _on_set_data(self, _event: Any = None) -> None:
        """Undo, redo, a finished stroke (or a dab in painted blocks, during a stroke)."""
        if self.session is not None:
            stroke = bool(getattr(self.layer, "_block_history", False))
            self._apply(lambda: self.session.sync(), live=stroke)
            if not stroke and self.stroke is not None:  # a stroke ended: draw it in
                self._redraw()
                self._end_preview()

    def _on_data(self, _event: Any = None) -> None:
        session, layer = self.session, self.layer
        if session is not None and layer is not None:
            if layer.data is session.labels:
                self._apply(lambda: session.sync(everywhere=True))
            else:
                self._apply(lambda: session.rebind(layer.data))

    def _apply(self, update: Any, live: bool = False) -> None:
        try:
            window = update()
        except PdmFuseError as err:
            show_error(str(err))
            return
        if window is None or self.outcome is None:
            return
        if live:
            self._preview(window)
        else:
            self._redraw()

    def _redraw(self) -> None:
        """Draw the result layers again (napari redraws a whole 4k image in about 0.1 s)."""
        for kind in ("fused", "focus_map"):
            name = layers.layer_name(self.outcome, kind)
            if name in self.viewer.layers:
                self.viewer.layers[name].refresh()

    def _preview(self, window: Window) -> None:
        """Show the stroke being painted in a layer of at most :data:`PREVIEW` px a side over
        the fused image, updated in place (napari draws a layer whole: the 4k result layers
        are drawn again only when the stroke ends). A stroke that leaves the preview moves it
        there, filled from the result (which every dab has already updated)."""
        preview, fused = self.preview, self._fused_layer()
        if preview is None or fused is None or preview not in self.viewer.layers:
            return
        full = fused.data[0] if fused.multiscale else fused.data

        def read(where: Window) -> np.ndarray:
            rows, cols = where
            return np.asarray(full[rows, cols] if fused.rgb else full[..., rows, cols])

        box = self.stroke
        if box is not None and within(window, box):
            rows, cols = relative(window, box)
            target = preview.data[rows, cols] if fused.rgb else preview.data[..., rows, cols]
            target[...] = read(window)
            preview.refresh()
            return
        box = around(window, self.session.shape_yx, PREVIEW)
        self.stroke = box
        translate = np.array(fused.translate, dtype=float)
        translate[-2:] += np.array([box[0].start, box[1].start]) * np.asarray(fused.scale[-2:])
        preview.data = np.array(read(box))
        preview.translate = translate
        preview.visible = True

    def _fused_layer(self) -> Image | None:
        name = layers.layer_name(self.outcome, "fused")
        layer = next((item for item in self.viewer.layers if item.name == name), None)
        return layer if isinstance(layer, Image) else None

    def _add_preview(self) -> None:
        """The layer that shows strokes while they are painted, hidden between them."""
        fused = self._fused_layer()
        if fused is None:
            return
        empty = np.zeros((1, 1, *fused.data[0].shape[-1:]) if fused.rgb else (1, 1), fused.dtype)
        self.preview = Image(
            empty,
            name=f"{self.outcome.source.name} retouch preview",
            rgb=fused.rgb,
            colormap=fused.colormap,
            contrast_limits=fused.contrast_limits,
            scale=fused.scale[-2:],
            visible=False,
        )
        self.viewer.layers.insert(self.viewer.layers.index(fused) + 1, self.preview)

    def _end_preview(self) -> None:
        """The stroke ended: the result layers show it; the preview hides."""
        if self.preview is not None and self.preview in self.viewer.layers:
            self.preview.visible = False
        self.stroke = None

    def _remove_preview(self) -> None:
        if self.preview is not None and self.preview in self.viewer.layers:
            self.viewer.layers.remove(self.preview)
        self.preview = self.stroke = None

    # -- choices -----------------------------------------------------------------------------

    def _on_source(self, value: Any) -> None:
        """Paint with the chosen source's label; another fusion is made first, once."""
        session, layer = self.session, self.layer
        if session is None or layer is None or value is None:
            return
        if isinstance(value, OtherFusion) and session.label_of(value) not in session.others:
            self._make(value)
            return
        layer.selected_label = session.label_of(value)
        layer.mode = "paint"
        self.viewer.layers.selection.active = layer
        what = value.name + " fusion" if isinstance(value, OtherFusion) else f"plane {value}"
        self.status.value = f"Painting takes the {what} (label {layer.selected_label})."

    def _make(self, other: OtherFusion) -> None:
        """Fuse the stack with ``other`` in the background, then paint with it."""
        if self.worker is not None:
            return
        run = self.session.other_run(other)
        worker = create_worker(fuse_run, run, _ignore_errors=True)
        self.worker = worker
        self.status.value = f"Making the {other.name} fusion to retouch from…"

        def returned(outcome: Outcome | Failure) -> None:
            if isinstance(outcome, Failure):
                show_error(outcome.message)
                return
            if self.session is not None:
                self.session.add_other(other, outcome)
                self._on_source(self.source.value)

        def finished() -> None:
            self.worker = None

        worker.returned.connect(returned)
        worker.finished.connect(finished)
        worker.errored.connect(lambda _: finished())
        worker.start()

    def _on_match(self, value: bool) -> None:
        if self.session is not None:
            self._apply(lambda: self.session.set_match_brightness(bool(value)))

    # -- the mask ----------------------------------------------------------------------------

    def save(self, path: str | Path | None = None, *, overwrite: bool = True) -> Path | None:
        """Save the mask for ``pdmfuse fuse --retouch`` (the file chosen above, by default);
        the widget asks before replacing a file through its dialog, so it overwrites."""
        if self.session is None:
            return None
        target = Path(path) if path is not None else Path(self.mask_file.value)
        if not str(target) or target == Path(".") or target.is_dir():
            show_error("Choose a file for the mask (a .tif name) first.")
            return None
        try:
            saved = self.session.save(target, overwrite=overwrite)
        except PdmFuseError as err:
            show_error(str(err))
            return None
        record = dataclasses.replace(self.session.retouch_mask(), name=str(saved)).record()
        for kind in ("fused", "focus_map"):  # the result layers say how they were retouched
            name = layers.layer_name(self.outcome, kind)
            if name in self.viewer.layers:
                self.viewer.layers[name].metadata["retouch"] = record
        show_info(f"Saved the retouch mask to {saved}; pdmfuse fuse … --retouch {saved.name}")
        return saved
