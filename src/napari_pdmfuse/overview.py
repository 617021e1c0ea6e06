"""A look at one fusion without opening its outputs: small samples of the fused image, the
focus map and the confidence, and the share of the field fused with little confidence.

The samples are every ``step``-th pixel in Y and X (``step`` chosen so the longest side has at
most :data:`SAMPLES` of them), taken from the tiles as they stream to the outputs
(:class:`Sampler`), or read back from outputs an earlier run wrote (:func:`overview_of_files`);
of a time-lapse, the first time point. A report turns them into thumbnails and figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .methods.base import TileResult
from .outputs import output_specs
from .planning import Job, Part
from .tiling import Tile
from .writing.recorded import read_pixels

#: Most samples along a side: thumbnails of this size stay small in a report.
SAMPLES = 192

#: Confidence under which a pixel counts as low-confidence: little focus information there
#: (blank background, a featureless area), so its focus position is a guess.
LOW_CONFIDENCE = 0.25


@dataclass(frozen=True, eq=False)  # compared (and hashed) by identity: it holds arrays
class Overview:
    """Samples of one fusion's outputs, and figures about it.

    ``fused`` is (h, w, C) (C channels or RGB samples, 1 for grey), ``focus`` (h, w) in slices
    and ``confidence`` (h, w): None when unknown (outputs of an earlier run without them).
    ``low_confidence`` is the share of pixels under :data:`LOW_CONFIDENCE`: exact over every
    time point and channel when measured while fusing, from the samples when read back.
    """

    fused: np.ndarray
    focus: np.ndarray | None
    confidence: np.ndarray | None
    low_confidence: float | None
    n_planes: int
    z_step_um: float | None
    rgb: bool
    input_bytes: int

    def focus_range(self) -> tuple[float, float] | None:
        """1st to 99th percentile of the focus position (slices) over the confident samples;
        None without a focus map or where no sample is confident."""
        if self.focus is None:
            return None
        focus = self.focus
        if self.confidence is not None:
            focus = focus[self.confidence >= LOW_CONFIDENCE]
        focus = focus[np.isfinite(focus)]
        if focus.size == 0:
            return None
        low, high = np.percentile(focus, [1, 99])
        return float(low), float(high)


def sample_step(shape_yx: tuple[int, int]) -> int:
    """Every how many pixels a sample is taken, so the longest side has at most SAMPLES."""
    return max(1, -(-max(shape_yx) // SAMPLES))


def _z_step(job: Job) -> float | None:
    return job.focus_scale if job.focus_scale is not None else job.image.z_step_um


def _input_bytes(job: Job) -> int:
    data = job.image.data
    return int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize


class Sampler:
    """A job sink that passes every tile on to ``sink`` and keeps samples of it."""

    def __init__(self, job: Job, sink: Any) -> None:
        self.job, self.sink = job, sink
        self.step = step = sample_step(job.image.shape_yx)
        height, width = job.image.shape_yx
        size = (-(-height // step), -(-width // step))
        self.fused = np.zeros((*size, job.image.n_channels), np.float32)
        self.focus = np.full(size, np.nan, np.float32)
        self.confidence = np.full(size, np.nan, np.float32)
        self.low = self.seen = 0

    def write(self, part: Part, tile: Tile, result: TileResult) -> None:
        self.sink.write(part, tile, result)
        self.low += int((result.confidence < LOW_CONFIDENCE).sum())
        self.seen += int(result.confidence.size)
        if part.t not in (None, 0):
            return
        rows, cols = tile.write
        step = self.step
        inside = (slice((-rows.start) % step, None, step), slice((-cols.start) % step, None, step))
        at = (
            slice(-(-rows.start // step), -(-rows.stop // step)),
            slice(-(-cols.start // step), -(-cols.stop // step)),
        )
        if part.c is None:
            self.fused[at] = result.fused[inside]
        else:
            self.fused[(*at, part.c)] = result.fused[inside][..., 0]
        if part.c in (None, 0):
            self.focus[at] = result.focus[inside]
            self.confidence[at] = result.confidence[inside]

    def cover(self, part: Part, tile: Tile, mask: np.ndarray) -> None:
        cover = getattr(self.sink, "cover", None)
        if cover is not None:
            cover(part, tile, mask)

    def overview(self) -> Overview:
        low = self.low / self.seen if self.seen else None
        image = self.job.image
        return Overview(
            self.fused,
            self.focus,
            self.confidence,
            low,
            image.n_planes,
            _z_step(self.job),
            image.rgb,
            _input_bytes(self.job),
        )


def overview_of_files(job: Job, paths: dict[str, Path]) -> Overview:
    """Samples read back from outputs ``job`` made before (``paths`` by kind: the fused image,
    and the focus map and confidence when they were written)."""
    specs = output_specs(job)
    step = sample_step(job.image.shape_yx)
    found: dict[str, np.ndarray] = {}
    for kind in ("fused", "focus_map", "confidence"):
        if kind not in paths:
            continue
        axes = specs[kind][0]
        index = tuple(
            0
            if a == "T" or (a == "C" and kind != "fused")
            else slice(None, None, step)
            if a in "YX"
            else slice(None)
            for a in axes
        )
        values = read_pixels(paths[kind], index).astype(np.float32)
        if kind == "fused" and "C" in axes:
            values = np.moveaxis(values, 0, -1)
        found[kind] = values if values.ndim == 3 or kind != "fused" else values[..., None]
    focus = found.get("focus_map")
    if focus is not None and job.focus_scale is not None:
        focus = focus / np.float32(job.focus_scale)  # the map was written in µm
    confidence = found.get("confidence")
    low = None if confidence is None else float((confidence < LOW_CONFIDENCE).mean())
    image = job.image
    return Overview(
        found["fused"],
        focus,
        confidence,
        low,
        image.n_planes,
        _z_step(job),
        image.rgb,
        _input_bytes(job),
    )
