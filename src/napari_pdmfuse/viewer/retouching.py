"""Retouching a fusion shown in the viewer, region by region. Qt-free and napari-free.

A :class:`RetouchSession` ties a label array (what a napari Labels layer paints) to the result
of one widget run. Whenever labels change, :meth:`RetouchSession.sync` finds the changed
region (:class:`LabelsTracker`) and recomputes the fused image and focus map there only, with
the core's :class:`~napari_pdmfuse.retouch.Retoucher` — the code the command line runs on each
tile — from the untouched fusion kept aside, so erasing or undoing a stroke restores it. An
in-memory result is updated in place (its original kept as a copy); a streamed result's
OME-Zarr stores are rewritten only in the chunks a stroke touches, and their pyramid tiles
above them, after the touched chunks' originals are set aside in the same folder, so memory
stays a few chunks whatever the result's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..planning import Alignment, Part, plan_job
from ..retouch import OTHER_FUSIONS, OtherFusion, Retoucher, RetouchMask, composed, write_mask
from ..writing.omezarr import CHUNK, halve
from .jobs import Outcome, Run, store_levels, without_stores

#: Side (px) of the blocks in which label changes are looked for.
BLOCK = 128

Window = tuple[slice, slice]


def union(a: Window | None, b: Window | None) -> Window | None:
    """The bounding box of two windows (either may be None)."""
    if a is None or b is None:
        return a or b
    return tuple(  # type: ignore[return-value]
        slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b, strict=True)
    )


class LabelsTracker:
    """Where a label array changed since it was last looked at.

    Blocks of :data:`BLOCK` px that have ever held a label are kept as copies; a look at a
    region compares its blocks with their copies (or with zeros), and a look at no region
    compares the kept blocks only — undo and redo change nothing else — so it costs in
    proportion to the painted area, not to the image.
    """

    def __init__(self, labels: np.ndarray) -> None:
        self.labels = labels
        self.copies: dict[tuple[int, int], np.ndarray] = {}

    def _blocks(self, region: Window) -> Iterator[tuple[int, int]]:
        rows, cols = region
        for by in range(rows.start // BLOCK, -(-rows.stop // BLOCK)):
            for bx in range(cols.start // BLOCK, -(-cols.stop // BLOCK)):
                yield by, bx

    def changed(self, region: Window | None = None) -> Window | None:
        """The bounding box of the labels changed (in ``region``, or in any block that ever
        held a label), remembering the new labels; None if nothing changed."""
        blocks = list(self.copies) if region is None else self._blocks(region)
        found: Window | None = None
        for by, bx in blocks:
            where = (slice(by * BLOCK, (by + 1) * BLOCK), slice(bx * BLOCK, (bx + 1) * BLOCK))
            now = self.labels[where]
            before = self.copies.get((by, bx))
            diff = now != 0 if before is None else now != before
            if not diff.any():
                continue
            self.copies[by, bx] = now.copy()
            ys, xs = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
            box = (
                slice(by * BLOCK + int(ys[0]), by * BLOCK + int(ys[-1]) + 1),
                slice(bx * BLOCK + int(xs[0]), bx * BLOCK + int(xs[-1]) + 1),
            )
            found = union(found, box)
        return found

    def everything(self) -> Window | None:
        """Changes anywhere (after the array was replaced or written to by a script)."""
        height, width = self.labels.shape
        return self.changed((slice(0, height), slice(0, width)))


def within(inner: Window, outer: Window) -> bool:
    """Whether window ``inner`` lies inside window ``outer``."""
    return all(i.start >= o.start and i.stop <= o.stop for i, o in zip(inner, outer, strict=True))


def around(window: Window, shape_yx: tuple[int, int], side: int) -> Window:
    """A window of ``side`` px (less where the image is smaller) centred on ``window`` and
    kept inside the image."""
    spans = []
    for span, size in zip(window, shape_yx, strict=True):
        length = min(side, size)
        start = min(max((span.start + span.stop) // 2 - length // 2, 0), size - length)
        spans.append(slice(start, start + length))
    return spans[0], spans[1]


def single_stack(outcome: Outcome) -> None:
    """Refuse results that hold more than one focus map (time points, separate channels)."""
    if "T" in outcome.axes or outcome.map_axes != "YX":
        raise InputError(
            "Retouching works on the result of one focus stack; fuse one time point with the "
            "channels combined to retouch it."
        )


def _hwc(fused: np.ndarray, axes: str) -> np.ndarray:
    """A (Y, X, C) view of an in-memory fused image laid out as ``axes``."""
    if "C" in axes and not axes.endswith("C"):
        return np.moveaxis(fused, axes.index("C"), -1)
    return fused if fused.ndim == 3 else fused[..., None]


class MemoryTarget:
    """An in-memory result, updated in place; its untouched fusion kept as a copy."""

    def __init__(self, outcome: Outcome) -> None:
        result = outcome.result
        self.fused = _hwc(result.fused, outcome.axes)
        self.focus = result.focus_map
        self.original_fused = self.fused.copy()
        self.original_focus = self.focus.copy()

    def original(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        return self.original_fused[rows, cols], self.original_focus[rows, cols]

    def write(self, rows: slice, cols: slice, fused: np.ndarray, focus: np.ndarray) -> None:
        self.fused[rows, cols] = fused
        self.focus[rows, cols] = focus

    def close(self) -> None:
        """Nothing to release."""


def _read(level: Any, rows: slice, cols: slice, channels: bool) -> np.ndarray:
    """A window of a store level as (h, w, C) (fused) or (h, w) (a map)."""
    block = np.asarray(level[..., rows, cols])
    return np.moveaxis(block, 0, -1) if channels else block


class StoreTarget:
    """A streamed result's OME-Zarr stores, rewritten chunk by chunk with their pyramids; the
    original of every chunk is copied aside (into the run's folder) before it is first
    rewritten, so the session never holds more than the chunks of one region."""

    def __init__(self, outcome: Outcome) -> None:
        import zarr

        self.channels = len(outcome.axes.replace("S", "C")) > 2  # stored as (C, Y, X)
        self.levels = {
            kind: store_levels(outcome.stores[kind], "r+") for kind in ("fused", "focus_map")
        }
        self.originals = {}
        for kind, levels in self.levels.items():
            top = levels[0]
            path = Path(outcome.folder) / f"untouched-{kind}.zarr"
            self.originals[kind] = zarr.create_array(
                str(path), shape=top.shape, chunks=top.chunks, dtype=top.dtype, fill_value=0,
                overwrite=True,
            )  # fmt: skip
        self.saved: set[tuple[int, int]] = set()

    def _save(self, rows: slice, cols: slice) -> None:
        """Copy aside the untouched chunks of the region not copied yet."""
        for cy in range(rows.start // CHUNK, -(-rows.stop // CHUNK)):
            for cx in range(cols.start // CHUNK, -(-cols.stop // CHUNK)):
                if (cy, cx) in self.saved:
                    continue
                where = (Ellipsis, slice(cy * CHUNK, (cy + 1) * CHUNK),
                         slice(cx * CHUNK, (cx + 1) * CHUNK))  # fmt: skip
                for kind, levels in self.levels.items():
                    self.originals[kind][where] = levels[0][where]
                self.saved.add((cy, cx))

    def original(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        self._save(rows, cols)
        fused = _read(self.originals["fused"], rows, cols, self.channels)
        return (fused if self.channels else fused[..., None]), _read(
            self.originals["focus_map"], rows, cols, False
        )

    def write(self, rows: slice, cols: slice, fused: np.ndarray, focus: np.ndarray) -> None:
        values = np.moveaxis(fused, -1, 0) if self.channels else fused[..., 0]
        for kind, block in (("fused", values), ("focus_map", focus)):
            levels = self.levels[kind]
            levels[0][..., rows, cols] = block
            refresh_pyramid(levels, rows, cols)

    def close(self) -> None:
        """Nothing is held open."""


def refresh_pyramid(levels: list[Any], rows: slice, cols: slice) -> None:
    """Remake the coarser levels' pixels over a changed window of level 0 (each the 2 × 2
    means of the level above, as the store's writer made them), touching only the chunks
    that window covers."""
    for k in range(1, len(levels)):
        above, below = levels[k - 1], levels[k]
        height, width = below.shape[-2:]
        rows = slice(rows.start // 2, min(-(-rows.stop // 2), height))
        cols = slice(cols.start // 2, min(-(-cols.stop // 2), width))
        if rows.start >= rows.stop or cols.start >= cols.stop:
            return
        source = np.asarray(
            above[..., 2 * rows.start : 2 * rows.stop, 2 * cols.start : 2 * cols.stop]
        )
        below[..., rows, cols] = halve(source, np.dtype(below.dtype))


class OtherResult:
    """Another fusion of the same stack, made whole by the widget, read window by window."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        if outcome.streamed:
            self.fused = store_levels(outcome.stores["fused"])[0]
            self.focus = store_levels(outcome.stores["focus_map"])[0]
            self.channels = len(outcome.axes.replace("S", "C")) > 2
        else:
            self.fused = _hwc(outcome.result.fused, outcome.axes)
            self.focus = outcome.result.focus_map

    def __call__(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        if not self.outcome.streamed:
            return self.fused[rows, cols], self.focus[rows, cols]
        fused = _read(self.fused, rows, cols, self.channels)
        return (fused if self.channels else fused[..., None]), _read(self.focus, rows, cols, False)


def other_run(outcome: Outcome, other: OtherFusion) -> Run:
    """The widget run that fuses ``outcome``'s stack with another method: the same stack and
    options but the method, with the focus map in slices (a retouch scales it like the
    fusion's own) and the fused image and focus map only."""
    run = outcome.run
    opts = run.options
    options = dataclasses.replace(
        opts,
        method=other.method,
        selection=other.selection,
        weights=opts.weights if other.method == "pdmnet" else None,
        z_spacing=None,
        focus_units=None,
        retouch=None,
    )
    return dataclasses.replace(run, options=options, outputs=("fused", "focus_map"))


class RetouchSession:
    """The retouch of one widget result: labels in, fused image and focus map updated where
    they change. Label k ≤ the plane count takes plane k; other fusions have fixed labels
    above it (:meth:`label_of`), and must be made (:meth:`other_run`, :meth:`add_other`)
    before their label is painted."""

    def __init__(self, outcome: Outcome, labels: np.ndarray | None = None) -> None:
        single_stack(outcome)
        run = outcome.run
        self.outcome = outcome
        job = plan_job(run.image, run.options, source=f"Layer {run.source.name!r}")
        if outcome.transforms is not None:  # the alignment already found, not estimated again
            job.alignments.by_time[None] = Alignment(list(outcome.transforms[0]))
        plan = job.plan(Part(None, None))
        self.n_planes = plan.stack.n_slices
        self.shape_yx = plan.stack.shape_yx
        self.scale = job.focus_scale
        top = self.n_planes + len(OTHER_FUSIONS)
        if labels is None:
            labels = np.zeros(self.shape_yx, np.uint8 if top <= 255 else np.uint16)
        if tuple(labels.shape) != self.shape_yx:
            raise InputError(
                f"The retouch labels are {'×'.join(map(str, labels.shape))} px but the result is "
                f"{'×'.join(map(str, self.shape_yx))} px; start the retouch again."
            )
        self.labels = labels
        self.tracker = LabelsTracker(labels)
        self.target = StoreTarget(outcome) if outcome.streamed else MemoryTarget(outcome)
        self.others: dict[int, OtherResult] = {}
        self.retoucher = Retoucher(
            RetouchMask(labels, planes=self.n_planes),
            self.n_planes,
            self.shape_yx,
            np.dtype(run.image.data.dtype),
            plan.window,
            self.others,
            fusion=lambda rows, cols: self.target.original(rows, cols)[0],
        )

    # -- sources -----------------------------------------------------------------------------

    def label_of(self, source: int | OtherFusion) -> int:
        """The label that takes plane ``source`` (1 = first) or another fusion."""
        if isinstance(source, OtherFusion):
            return self.n_planes + 1 + OTHER_FUSIONS.index(source)
        if not 1 <= source <= self.n_planes:
            raise InputError(f"Plane {source} does not exist; the stack has {self.n_planes}.")
        return int(source)

    def fusion_of(self, label: int) -> OtherFusion | None:
        """The other fusion a label takes, None for a plane or a label that names nothing."""
        index = label - self.n_planes - 1
        return OTHER_FUSIONS[index] if 0 <= index < len(OTHER_FUSIONS) else None

    def other_run(self, other: OtherFusion) -> Run:
        """The widget run that makes ``other`` whole (see :func:`other_run`)."""
        return other_run(self.outcome, other)

    def add_other(self, other: OtherFusion, outcome: Outcome) -> None:
        """Take ``other`` from ``outcome`` (made by :meth:`other_run`) under its label."""
        label = self.label_of(other)
        self.others[label] = OtherResult(outcome)
        sources = {**self.mask.sources, label: other}
        self.retoucher.mask = dataclasses.replace(self.mask, sources=sources)

    @property
    def mask(self) -> RetouchMask:
        return self.retoucher.mask

    # -- updates -----------------------------------------------------------------------------

    def sync(self, region: Window | None = None, *, everywhere: bool = False) -> Window | None:
        """Update the result where the labels changed (in ``region``, in the painted blocks,
        or ``everywhere``); returns the window rewritten, or None."""
        changed = self.tracker.everything() if everywhere else self.tracker.changed(region)
        if changed is None:
            return None
        return self.update(changed)

    def update(self, window: Window) -> Window:
        """Recompute the result over ``window`` and as far around as a label reaches."""
        unknown = [k for k in np.unique(self.labels[window]) if k > self.n_planes
                   and int(k) not in self.others]  # fmt: skip
        if unknown:
            label = int(unknown[0])
            fusion = self.fusion_of(label)
            if fusion is None:
                raise InputError(
                    f"Label {label} names no plane and no fusion; paint with the sources the "
                    "retouch panel offers."
                )
            raise InputError(
                f"Label {label} takes the {fusion.name} fusion, which has not been made; "
                "choose it as the source first."
            )
        reach = self.retoucher.reach
        height, width = self.shape_yx
        rows, cols = window
        rows = slice(max(rows.start - reach, 0), min(rows.stop + reach, height))
        cols = slice(max(cols.start - reach, 0), min(cols.stop + reach, width))
        fused, focus = self.target.original(rows, cols)
        changed = self.retoucher.window(rows, cols, fused, focus)
        if changed is not None:
            fused, focus = composed(changed, focus, self.scale)
        self.target.write(rows, cols, fused, focus)
        return rows, cols

    def set_match_brightness(self, match: bool) -> Window | None:
        """Match taken planes' brightness to their surroundings (or not), everywhere."""
        if match == self.mask.match_brightness:
            return None
        self.retoucher.mask = dataclasses.replace(self.mask, match_brightness=match)
        painted = self.painted()
        return None if painted is None else self.update(painted)

    def painted(self) -> Window | None:
        """The bounding box of every label, None when nothing is painted."""
        found: Window | None = None
        for by, bx in self.tracker.copies:
            block = self.labels[by * BLOCK : (by + 1) * BLOCK, bx * BLOCK : (bx + 1) * BLOCK]
            if block.any():
                box = (slice(by * BLOCK, (by + 1) * BLOCK), slice(bx * BLOCK, (bx + 1) * BLOCK))
                found = union(found, box)
        if found is None:
            return None
        height, width = self.shape_yx
        rows, cols = found
        return slice(rows.start, min(rows.stop, height)), slice(cols.start, min(cols.stop, width))

    def rebind(self, labels: np.ndarray) -> Window | None:
        """Follow a label array that replaced the session's (a script set the layer's data):
        recompute where either array holds labels."""
        before = self.painted()
        self.labels = labels
        self.tracker = LabelsTracker(labels)
        self.retoucher.mask = dataclasses.replace(self.mask, labels=labels)
        window = union(before, self.tracker.everything())
        return None if window is None else self.update(window)

    # -- the mask ----------------------------------------------------------------------------

    def retouch_mask(self) -> RetouchMask:
        """The mask as the command line takes it: the labels, and the fusions they use."""
        mask = self.mask
        used = set(np.unique(self.labels).tolist())
        sources = {k: s for k, s in mask.sources.items() if k in used}
        return RetouchMask(
            self.labels, sources, mask.match_brightness, planes=self.n_planes, name=None
        )

    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save the mask for ``pdmfuse fuse --retouch`` (whole or not at all)."""
        return write_mask(path, self.retouch_mask(), overwrite=overwrite)

    def close(self) -> None:
        """Forget the other fusions (deleting the stores of streamed ones)."""
        for other in self.others.values():
            if other.outcome.streamed:
                without_stores(other.outcome.folder)
        self.others.clear()
        self.target.close()


def region_of_offset(offset: Any, shape: tuple[int, ...], full: tuple[int, int]) -> Window:
    """The window a Labels layer's ``labels_update`` event names (offset and data shape)."""
    y, x = (int(v) for v in list(offset)[-2:])
    height, width = shape[:2]
    return slice(max(y, 0), min(y + height, full[0])), slice(max(x, 0), min(x + width, full[1]))
