"""One fusion run of the widget, described once and run as one generator. Qt-free.

:func:`layer_run` / :func:`planes_run` turn the widget's choices into a :class:`Run`: the
:class:`~napari_pdmfuse.reading.Image`, the :class:`~napari_pdmfuse.options.FuseOptions` and
where the results go (:class:`~.sources.Source`). :func:`fuse_run` plans the job and picks
where its results go: into memory when they are small, else tile by tile into OME-Zarr stores
in a new temporary folder, so a stack far larger than memory can be fused and shown as
multiscale layers. A temporary folder, not the source's folder, because sources may be
read-only, remote or not files at all; ``$TMPDIR`` chooses the disk.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError, PdmFuseError
from ..options import FuseOptions
from ..outputs import FileOutputs, output_bytes
from ..planning import Job, Part, Progress, plan_job
from ..reading import Image
from ..results import FusionResult, MemoryOutputs
from ..sizes import available_memory, check_disk, gib
from ..tiling import Tile
from ..writing.atomic import write_failed
from .sources import Source, layer_image, planes_image

#: Results (fused image and maps) larger than this, or than a quarter of the free memory,
#: are streamed into OME-Zarr stores instead of being held in memory.
STREAM_BYTES = 2**30

#: What a run can add to the viewer, as the widget's output boxes name them.
OUTPUTS = ("fused", "focus_map", "confidence")


@dataclass(frozen=True)
class Failure:
    """A :class:`PdmFuseError` raised in the worker, handed back as a value to be shown."""

    message: str


@dataclass(frozen=True)
class Run:
    """Everything one fusion needs: the image, the options, the outputs asked for, and the
    source's placement for the result layers."""

    image: Image
    options: FuseOptions
    source: Source
    outputs: tuple[str, ...] = OUTPUTS


@dataclass(frozen=True)
class Outcome:
    """What a run produced: ``result`` in memory, or OME-Zarr ``stores`` by output kind
    (``fused``, ``focus_map``, ``confidence``, ``coverage``) in ``folder``.

    ``axes``/``map_axes`` name the results' axes as :class:`FusionResult` does; ``transforms``
    (per time point, per plane) and ``covered`` (the fraction of the field every plane saw)
    are set when the planes were aligned. A streamed run yields its Outcome once before the
    first tile (``done`` False), so the layers can show the stores as they fill.
    """

    run: Run
    method: str
    focus_unit: str
    axes: str
    map_axes: str
    result: FusionResult | None = None
    stores: dict[str, Path] | None = None
    folder: Path | None = None
    transforms: list[list[Any]] | None = None
    covered: float | None = None
    done: bool = True

    @property
    def streamed(self) -> bool:
        return self.stores is not None

    @property
    def source(self) -> Source:
        return self.run.source


def _options(source: Source, values: dict[str, Any]) -> FuseOptions:
    """Options from the widget's values; the layer's Z scale, when not 1, puts the focus map
    in its units."""
    return FuseOptions(**values, z_spacing=source.z_scale if source.physical_z else None)


def layer_run(
    layer: Any,
    z_axis: int,
    channel_axis: int | None = None,
    time_axis: int | None = None,
    *,
    outputs: Sequence[str] = OUTPUTS,
    **options: Any,
) -> Run:
    """A run over one layer with a Z axis (and channel and time axes, if chosen)."""
    image, source = layer_image(layer, z_axis, channel_axis, time_axis)
    if channel_axis is None:  # the channel options apply only where there are channels
        options = {**options, "channel_mode": "combined", "focus_channel": None}
    return Run(image, _options(source, options), source, tuple(outputs))


def planes_run(layers: Sequence[Any], *, outputs: Sequence[str] = OUTPUTS, **options: Any) -> Run:
    """A run over 2-D layers taken as focal planes in the given order."""
    image, source = planes_image(layers)
    options = {**options, "channel_mode": "combined", "focus_channel": None}
    return Run(image, _options(source, options), source, tuple(outputs))


def result_bytes(job: Job) -> int:
    """Memory the results of ``job`` take when held in memory."""
    kinds = ["fused", "focus_map", "confidence"] + ["coverage"] * (job.options.align is not None)
    return sum(output_bytes(job, kinds).values())


def streams(job: Job) -> bool:
    """Whether the results go to OME-Zarr stores: over :data:`STREAM_BYTES` or a quarter of the
    free memory."""
    free = available_memory()
    limit = STREAM_BYTES if free is None else min(STREAM_BYTES, free // 4)
    return result_bytes(job) > limit


def _outcome(job: Job, run: Run, **values: Any) -> Outcome:
    log = job.alignments.by_time
    transforms = covered = None
    if log and values.get("done", True):
        ordered = [log[t] for t in sorted(log, key=lambda t: -1 if t is None else t)]
        transforms = [a.transforms for a in ordered]
        covered = float(np.mean([a.fraction for a in ordered]))
    return Outcome(
        run,
        method=job.method.name,
        focus_unit="slice" if job.focus_scale is None else "physical",
        axes=job.fused_axes,
        map_axes=job.map_axes,
        transforms=transforms,
        covered=covered,
        **values,
    )


def store_paths(job: Job, run: Run) -> tuple[Path, dict[str, Path]]:
    """A new temporary folder and the OME-Zarr store of each output in it (checked for room)."""
    folder = Path(tempfile.mkdtemp(prefix="pdmfuse-"))
    kinds = [k for k in OUTPUTS if k in run.outputs]
    if job.options.align is not None:
        kinds.append("coverage")
    stores = {kind: folder / f"{kind}.ome.zarr" for kind in kinds}
    sizes = output_bytes(job, kinds)
    try:
        check_disk([(stores[k], sizes[k]) for k in kinds])
    except OutputError:
        shutil.rmtree(folder, ignore_errors=True)
        total = gib(sum(sizes.values()))
        raise OutputError(
            f"The results need {total} on disk, more than is free in {folder.parent}; point "
            "TMPDIR to a larger disk before starting napari, or crop the stack."
        ) from None
    return folder, stores


def fuse_run(run: Run) -> Generator[Progress | Outcome, None, Outcome | Failure]:
    """Plan and fuse ``run``, yielding :class:`Progress` per tile, and return its
    :class:`Outcome`; a streamed run first yields its Outcome (``done`` False).

    A :class:`PdmFuseError` comes back as a :class:`Failure` (other exceptions are bugs and
    propagate). Once a streamed run has yielded its Outcome, its folder is the caller's: the
    layers read it, so the caller deletes it (:func:`without_stores`) if the run fails.
    """
    try:
        job = plan_job(run.image, run.options, source=f"Layer {run.source.name!r}")
        if not streams(job):
            memory = MemoryOutputs(job)
            yield from job.run(memory)
            return _outcome(job, run, result=memory.result())
        folder, stores = store_paths(job, run)
    except PdmFuseError as err:
        return Failure(str(err))
    shown = False
    try:
        sink = FileOutputs(job, stores)
        try:
            shown = True  # from here on the caller's layers read the folder: it is theirs
            yield _outcome(job, run, stores=stores, folder=folder, done=False)
            yield from job.run(PreviewedOutputs(sink, stores))
            sink.finish()
        finally:
            sink.close()
        return _outcome(job, run, stores=stores, folder=folder)
    except PdmFuseError as err:
        return Failure(str(err))
    except OSError as exc:  # the temporary folder's disk filled up, or went away
        return Failure(str(write_failed(folder, exc)))
    finally:
        if not shown:
            shutil.rmtree(folder, ignore_errors=True)


def store_levels(path: Path, mode: str = "r") -> list[Any]:
    """The pyramid levels of an OME-Zarr store written by :class:`FileOutputs`, finest first."""
    import zarr

    group = zarr.open_group(str(path), mode=mode)
    return [group[key] for key in sorted(group.array_keys(), key=int)]


class PreviewedOutputs:
    """Tiles into :class:`FileOutputs`, and a preview of each into the stores' coarser levels.

    The stores get their pyramid only once every tile is in; until then each tile is copied
    into the coarser levels by taking every 2nd, 4th, … pixel, so a zoomed-out multiscale layer
    fills in with the run. :meth:`FileOutputs.finish` then replaces the previews by means.
    """

    def __init__(self, sink: FileOutputs, stores: dict[str, Path]) -> None:
        self.sink = sink
        self.levels = {kind: store_levels(path, "r+") for kind, path in stores.items()}

    def write(self, part: Part, tile: Tile, result: Any) -> None:
        self.sink.write(part, tile, result)
        for kind in OUTPUTS:
            if kind in self.levels:
                self._preview(self.levels[kind], part, tile)

    def cover(self, part: Part, tile: Tile, mask: np.ndarray) -> None:
        self.sink.cover(part, tile, mask)
        if "coverage" in self.levels:
            self._preview(self.levels["coverage"], part, tile)

    @staticmethod
    def _preview(levels: list[Any], part: Part, tile: Tile) -> None:
        rows, cols = tile.write
        lead = () if part.t is None else (part.t,)  # T is always the first stored axis
        block = levels[0][(*lead, Ellipsis, rows, cols)]
        for k, level in enumerate(levels[1:], 1):
            step = 2**k
            dy, dx = -rows.start % step, -cols.start % step
            sub = block[..., dy::step, dx::step]
            y, x = (rows.start + dy) // step, (cols.start + dx) // step
            height = min(sub.shape[-2], level.shape[-2] - y)
            width = min(sub.shape[-1], level.shape[-1] - x)
            if height > 0 and width > 0:
                where = (*lead, Ellipsis, slice(y, y + height), slice(x, x + width))
                level[where] = sub[..., :height, :width]


def without_stores(folder: Path | None) -> None:
    """Delete a streamed outcome's folder, if it has one (its layers must be gone or replaced
    first)."""
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)
