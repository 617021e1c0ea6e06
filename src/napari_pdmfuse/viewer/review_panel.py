"""The widget's guided review: find the doubtful regions of the last fusion, outline them in a
Shapes layer and step through them, the camera centred on each in turn.

The regions (:func:`napari_pdmfuse.review.doubtful_regions`) are where the confidence is low
although the image shows detail, and where a second method's fusion of the same stack (made in
the background, as the retouch makes its sources) differs from this one. Streamed results are
reviewed from their stores' pyramid level of at most 1024 px a side.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton
from napari.layers import Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error

from ..errors import PdmFuseError
from ..retouch import OTHER_FUSIONS, OtherFusion
from ..review import DISAGREEMENT, REVIEW_SIDE, Region, doubtful_regions, reduced, reduction
from . import layers
from .jobs import Failure, Outcome, fuse_run
from .retouching import other_run, single_stack

#: Outline colours: orange for low confidence, magenta where the methods disagree.
COLOURS = {DISAGREEMENT: "magenta"}
DEFAULT_COLOUR = "orange"

#: The least of the result (px) the view shows around a region.
CONTEXT = 200


def review_maps(outcome: Outcome, kind: str, factor: int) -> np.ndarray:
    """An output of ``outcome`` reduced by ``factor`` (a pyramid level of a streamed one),
    laid out (Y, X[, C])."""
    arrays = layers.levels(outcome, kind)
    if outcome.streamed:
        level = min(int(np.log2(factor)), len(arrays) - 1)
        values = np.asarray(arrays[level], dtype=np.float32)
        factor = 1 if 2**level == factor else factor // 2**level
    else:
        values = np.asarray(arrays[0])
    if kind == "fused" and "C" in outcome.axes and not outcome.axes.endswith("C"):
        values = np.moveaxis(values, outcome.axes.index("C"), -1)
    return reduced(values, factor)


class ReviewPanel(Container):
    """Find the doubtful regions of the last fusion and step through them."""

    def __init__(self, widget: Any) -> None:
        super().__init__(labels=True)
        self.viewer = widget.viewer
        self.outcome: Outcome | None = None
        self.regions: list[Region] = []
        self.index = -1
        self.worker: Any = None
        self.layer: Shapes | None = None
        self.compare = ComboBox(label="compare with", choices=self._choices)
        self.compare.tooltip = (
            "A second method whose fusion of the same stack is compared with this one; the "
            "regions where they differ most are listed with those of low confidence."
        )
        self.find_button = PushButton(text="Find doubtful regions", enabled=False)
        self.previous_button = PushButton(text="◀ previous", enabled=False)
        self.next_button = PushButton(text="next ▶", enabled=False)
        steps = Container(
            layout="horizontal", labels=False, widgets=[self.previous_button, self.next_button]
        )
        steps.margins = (0, 0, 0, 0)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend([self.compare, self.find_button, steps, self.status])
        self.find_button.changed.connect(self.find)
        self.previous_button.changed.connect(lambda: self.step(-1))
        self.next_button.changed.connect(lambda: self.step(1))

    def _choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        choices: list[tuple[str, Any]] = [("none (confidence only)", None)]
        outcome = self.outcome
        own = (
            None if outcome is None else OtherFusion(outcome.method, outcome.run.options.selection)
        )
        return choices + [(o.name, o) for o in OTHER_FUSIONS if o != own]

    def follow(self, outcome: Outcome) -> None:
        """A fusion finished: review it from now on."""
        self.outcome = outcome
        self.regions, self.index = [], -1
        previous = self.compare.value
        self.compare.reset_choices()
        valid = [value for _, value in self._choices()]
        self.compare.value = (
            previous if previous is not None and previous in valid else self._default()
        )
        self.previous_button.enabled = self.next_button.enabled = False
        try:
            single_stack(outcome)
        except PdmFuseError as err:
            self.find_button.enabled = False
            self.status.value = str(err)
            return
        self.find_button.enabled = True
        self.status.value = ""

    def _default(self) -> OtherFusion | None:
        """PDMNet is compared with the wavelet method; any other method with PDMNet."""
        if self.outcome is None:
            return None
        return OtherFusion("wavelet" if self.outcome.method == "pdmnet" else "pdmnet")

    # -- finding -----------------------------------------------------------------------------

    def find(self) -> None:
        """Make the second fusion (in the background), then find and show the regions."""
        if self.outcome is None or self.worker is not None:
            return
        other = self.compare.value
        if other is None:
            self._found(None)
            return
        worker = create_worker(fuse_run, other_run(self.outcome, other), _ignore_errors=True)
        self.worker = worker
        self.find_button.enabled = False
        self.status.value = f"Fusing with {other.name} to compare…"

        def finished() -> None:
            self.worker = None
            self.find_button.enabled = True

        worker.returned.connect(self._found)
        worker.finished.connect(finished)
        worker.errored.connect(lambda _: finished())
        worker.start()

    def _found(self, second: Outcome | Failure | None) -> None:
        if isinstance(second, Failure):
            show_error(second.message)
            return
        outcome = self.outcome
        factor = reduction(outcome.run.image.shape_yx, REVIEW_SIDE)
        fused = review_maps(outcome, "fused", factor)
        confidence = review_maps(outcome, "confidence", factor)
        other = None if second is None else review_maps(second, "fused", factor)
        if second is not None and second.streamed:
            from .jobs import without_stores

            without_stores(second.folder)
        self.regions = doubtful_regions(fused, confidence, other, factor=factor)
        self.index = -1
        self._outline()
        if not self.regions:
            self.status.value = "No doubtful region found."
            return
        self.previous_button.enabled = self.next_button.enabled = True
        self.step(1)

    def _outline(self) -> None:
        """The regions as rectangles, numbered by rank, in ``<name> review``."""
        outcome = self.outcome
        name = f"{outcome.source.name} review"
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        if not self.regions:
            self.layer = None
            return
        boxes = [
            np.array([[r.rows.start, r.cols.start], [r.rows.stop, r.cols.stop]], dtype=float)
            for r in self.regions
        ]
        colours = [COLOURS.get(r.reason, DEFAULT_COLOUR) for r in self.regions]
        self.layer = Shapes(
            boxes,
            shape_type="rectangle",
            name=name,
            edge_color=colours,
            face_color="transparent",
            edge_width=max(2.0, max(outcome.run.image.shape_yx) / 400),
            features={
                "rank": np.arange(1, len(boxes) + 1),
                "reason": [r.reason for r in self.regions],
            },
            text={"string": "{rank}", "color": "white", "anchor": "upper_left", "size": 12},
            **outcome.source.placement("YX"),
        )
        self.viewer.layers.append(self.layer)

    # -- stepping ----------------------------------------------------------------------------

    def step(self, by: int) -> Region | None:
        """Centre the camera on the next (or previous) region, wrapping round."""
        if not self.regions:
            return None
        self.index = (self.index + by) % len(self.regions)
        region = self.regions[self.index]
        self.centre(region)
        if self.layer is not None:
            self.layer.selected_data = {self.index}
        self.status.value = (
            f"Region {self.index + 1} of {len(self.regions)}: {region.reason}, "
            f"{region.area:,} px, mean doubt {region.doubt:.2f}."
        )
        return region

    def centre(self, region: Region) -> None:
        """Centre the 2-D view on ``region``, zoomed so it fills about half the view (and the
        view spans at least :data:`CONTEXT` px of the result, for small regions)."""
        source = self.outcome.source
        viewer = self.viewer
        viewer.dims.ndisplay = 2
        viewer.reset_view()
        scale = np.asarray(source.scale, dtype=float)
        translate = np.asarray(source.translate, dtype=float)
        height, width = self.outcome.run.image.shape_yx
        box = np.array(
            [region.rows.stop - region.rows.start, region.cols.stop - region.cols.start], float
        )
        box = np.maximum(box, CONTEXT / 2)
        fit = min(height / max(box[0], 1), width / max(box[1], 1))
        viewer.camera.zoom = viewer.camera.zoom * max(1.0, fit / 2)
        viewer.camera.center = tuple(translate + np.asarray(region.centre) * scale)
