"""The widget's 3-D model export: the last fusion's relief as glTF, PLY or STL.

The model is :mod:`napari_pdmfuse.meshes`' (the height view's surface, textured with the fused
image), in micrometres when the layer's pixels and Z step are in µm, with the height view's
exaggeration; a streamed result is read chunk by chunk from its stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import Container, FileEdit, PushButton
from napari.utils.notifications import show_error, show_info

from ..errors import PdmFuseError
from ..meshes import ReliefSampler, Units, model_units, write_model
from ..writing.omezarr import CHUNK
from .jobs import Outcome, store_levels
from .retouching import single_stack
from .sources import unit_label

MICROMETRES = ("µm", "um", "micrometer", "micron")


def outcome_units(outcome: Outcome) -> Units:
    """Micrometres when the layer's pixels and its focus map are in µm, else pixels."""
    source = outcome.source
    in_um = source.units is not None and unit_label(source.units[-1]) in MICROMETRES
    z_um = outcome.focus_unit == "physical" and source.z_unit in MICROMETRES
    return model_units(source.scale if in_um else None, 1.0 if z_um else None)


def outcome_relief(outcome: Outcome) -> Any:
    """The relief of a widget result, in memory or read from its stores chunk by chunk."""
    source = outcome.source
    contrast = None if source.rgb else source.contrast_limits
    shape = outcome.run.image.shape_yx
    sampler = ReliefSampler(shape, source.rgb, contrast)
    if not outcome.streamed:
        result = outcome.result
        fused = result.fused
        if "C" in outcome.axes and not outcome.axes.endswith("C"):
            fused = np.moveaxis(fused, outcome.axes.index("C"), -1)
        fused = fused if fused.ndim == 3 else fused[..., None]
        whole = (slice(0, shape[0]), slice(0, shape[1]))
        sampler.add(*whole, fused, result.focus_map, result.confidence)
        return sampler.relief()
    maps = {kind: store_levels(outcome.stores[kind])[0] for kind in outcome.stores}
    channels = maps["fused"].ndim == 3
    for y in range(0, shape[0], CHUNK):
        for x in range(0, shape[1], CHUNK):
            rows, cols = slice(y, min(y + CHUNK, shape[0])), slice(x, min(x + CHUNK, shape[1]))
            fused = np.asarray(maps["fused"][..., rows, cols])
            fused = np.moveaxis(fused, 0, -1) if channels else fused[..., None]
            focus = np.asarray(maps["focus_map"][rows, cols])
            weight = np.asarray(maps["confidence"][rows, cols]) if "confidence" in maps else 1.0
            sampler.add(rows, cols, fused, focus, np.broadcast_to(weight, focus.shape))
    return sampler.relief()


class ModelPanel(Container):
    """Export the last fusion as a 3-D model; the file's suffix picks the format."""

    def __init__(self, widget: Any) -> None:
        super().__init__(labels=True)
        self.widget = widget
        self.outcome: Outcome | None = None
        self.model_file = FileEdit(label="3-D model", mode="w", filter="*.glb *.ply *.stl")
        self.export_button = PushButton(text="Export 3-D model", enabled=False)
        self.export_button.tooltip = (
            "The focus map as a relief textured with the fused image: .glb (glTF, any 3-D "
            "viewer), .ply (with a .png texture beside it) or .stl (a solid for 3-D printing)."
        )
        self.extend([self.model_file, self.export_button])
        self.export_button.changed.connect(lambda: self.export())

    def follow(self, outcome: Outcome) -> None:
        """A fusion finished: export it from now on (one focus map only)."""
        self.outcome = outcome
        try:
            single_stack(outcome)
        except PdmFuseError:
            self.export_button.enabled = False
            return
        self.export_button.enabled = True

    def export(self, path: str | Path | None = None) -> list[Path] | None:
        """Write the model to ``path`` (the file chosen above, by default), replacing it: the
        file dialog has asked already."""
        if self.outcome is None:
            return None
        target = Path(path) if path is not None else Path(self.model_file.value)
        if not str(target) or target == Path(".") or target.is_dir():
            show_error("Choose a file for the 3-D model (.glb, .ply or .stl) first.")
            return None
        try:
            written = write_model(
                target,
                outcome_relief(self.outcome),
                outcome_units(self.outcome),
                exaggeration=float(self.widget.relief.value),
                record={"software": "napari-pdmfuse", "method": self.outcome.method},
                overwrite=True,
            )
        except PdmFuseError as err:
            show_error(str(err))
            return None
        show_info(f"Wrote the 3-D model to {', '.join(str(p) for p in written)}.")
        return written
