"""Results in memory: one result type for every job, filled tile by tile.

Every part of a job (a time point, a channel fused on its own) writes its tiles into the same
arrays, kept with the channels last as tiles arrive; :meth:`MemoryOutputs.result` hands them
out in the axes asked for, as views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from . import sizes
from .align import Transform
from .errors import InputError
from .methods.base import TileResult
from .planning import Job, Part
from .stack import to_dtype
from .tiling import Tile


@dataclass
class FusionResult:
    """What a fusion produces.

    ``fused`` has the input's dtype and channels, its axes named by ``axes`` ("YX", "YXS" for
    RGB, "YXC" for channels, or "TCYX"-style for images with named axes); ``focus_map`` is the
    position of the in-focus plane (slices from the first plane, fractional, or physical z when
    ``focus_unit`` is "physical") and ``confidence`` is in [0, 1], zero where the stack holds no
    focus information; both have ``map_axes`` (with C when channels were fused separately).
    ``transforms`` (per time point, per plane) and ``coverage`` ((T?, Y, X), True where every
    plane saw the pixel) are set when the planes were aligned.
    """

    fused: np.ndarray
    focus_map: np.ndarray
    confidence: np.ndarray
    method: str
    focus_unit: str = "slice"
    axes: str = "YX"
    map_axes: str = "YX"
    transforms: list[list[Transform]] | None = None
    coverage: np.ndarray | None = None


def check_memory(job: Job) -> None:
    """Refuse up front a result (all time points) larger than the free memory."""
    image = job.image
    height, width = image.shape_yx
    times = image.n_times or 1
    maps = image.n_channels if job.options.channel_mode == "separate" else 1
    itemsize = np.dtype(job.image.data.dtype).itemsize
    need = times * height * width * (image.n_channels * itemsize + 2 * sizes.MAP_BYTES * maps)
    free = sizes.available_memory()
    if free is not None and need > free:
        raise InputError(
            f"The results of a {height}×{width} px stack need {sizes.gib(need)} of memory but "
            f"only {sizes.gib(free)} is available; fuse it with the pdmfuse command (or "
            "napari_pdmfuse.fuse_files), which streams the results to disk tile by tile, or "
            "crop the stack."
        )


class MemoryOutputs:
    """A job sink holding every output in memory."""

    def __init__(self, job: Job) -> None:
        self.job = job
        image = job.image
        height, width = image.shape_yx
        lead = (image.n_times,) if image.n_times is not None else ()
        self.dtype = np.dtype(job.image.data.dtype)
        self.fused = np.empty((*lead, height, width, image.n_channels), dtype=self.dtype)
        maps = image.n_channels if "C" in job.map_axes else 1
        self.focus = np.empty((*lead, height, width, maps), dtype=np.float32)
        self.confidence = np.empty((*lead, height, width, maps), dtype=np.float32)
        aligned = job.options.align is not None
        self.coverage = np.zeros((*lead, height, width), dtype=bool) if aligned else None
        self.scale = None if job.focus_scale is None else np.float32(job.focus_scale)

    def write(self, part: Part, tile: Tile, result: TileResult) -> None:
        t = () if part.t is None else (part.t,)
        ys, xs = tile.write
        fused = to_dtype(result.fused, self.dtype)
        focus = result.focus if self.scale is None else result.focus * self.scale
        if part.c is None:
            self.fused[(*t, ys, xs)] = fused
            channel = 0
        else:
            self.fused[(*t, ys, xs, part.c)] = fused[..., 0]
            channel = part.c
        self.focus[(*t, ys, xs, channel)] = focus
        self.confidence[(*t, ys, xs, channel)] = result.confidence

    def cover(self, part: Part, tile: Tile, mask: np.ndarray) -> None:
        if self.coverage is not None:
            t = () if part.t is None else (part.t,)
            self.coverage[(*t, *tile.write)] = mask

    def result(self, *, channels_last: bool = False) -> FusionResult:
        """The outputs as a :class:`FusionResult`; ``channels_last`` keeps (…, Y, X, C)."""
        job = self.job
        fused, axes = self.fused, job.fused_axes
        channel = job.image.channel_letter
        grey = channel is None
        if grey:
            fused = fused[..., 0]
        elif channels_last or channel == "S":
            axes = axes.replace("C", "") + ("C" if channel == "C" else "")
        else:
            fused = np.moveaxis(fused, -1, -3)
        separate = "C" in job.map_axes
        focus, confidence = self.focus, self.confidence
        if separate:
            focus, confidence = np.moveaxis(focus, -1, -3), np.moveaxis(confidence, -1, -3)
        else:
            focus, confidence = focus[..., 0], confidence[..., 0]
        transforms = None
        log = job.alignments
        if log.by_time:
            transforms = [a.transforms for _, a in sorted(log.by_time.items(), key=_time_key)]
        return FusionResult(
            fused=fused,
            focus_map=focus,
            confidence=confidence,
            method=job.method.name,
            focus_unit="slice" if job.focus_scale is None else "physical",
            axes=axes,
            map_axes=job.map_axes,
            transforms=transforms,
            coverage=self.coverage,
        )


def _time_key(item: tuple[int | None, Any]) -> int:
    return -1 if item[0] is None else item[0]
