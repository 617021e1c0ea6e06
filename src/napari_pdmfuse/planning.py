"""One plan for every job: focus stacks over time points (and channels), tiles with halos.

An :class:`~napari_pdmfuse.reading.Image` holds T, Z, C (or RGB samples), Y and X in any
order. :func:`plan_job` checks it against the :class:`~napari_pdmfuse.options.FuseOptions`
once and cuts it into parts: one focus stack per time point, and per channel when channels are
fused separately. Each part is a :class:`FusionPlan` (its stack, method, normalisation and tile
size), built only when the part starts, so no time point is read before its turn. Every part
writes into the same outputs, whose axes are always a subset of ``T C Y X S`` in that order.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import sizes
from .errors import InputError
from .executing import TileFuser
from .methods import cached_method
from .methods.base import CLASSICAL_RESERVE, FusionMethod, TileResult
from .options import FuseOptions
from .reading.image import Image
from .sizes import check_tile, gib, min_tile, system_memory
from .stack import Normalisation, Stack, as_stack, is_lazy, normalisation
from .tiling import Tile, count_tiles, tile_grid

if TYPE_CHECKING:
    from .align import Transform


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


class Sink(Protocol):
    """Where one focus stack's stitched tile cores go (see :class:`PartSink`)."""

    def write(self, tile: Tile, result: TileResult) -> None: ...


#: Working memory of one tile (see :func:`tile_budget`): at most, and at least unless the
#: process has a memory limit of its own.
TILE_BUDGET_MAX = 640 * 2**20
TILE_BUDGET_MIN = 256 * 2**20

#: Under a memory limit, what is left besides the method's reserve is shared by this many
#: tiles' working sets: the tile being fused and the next one read ahead, their copies and the
#: allocator's slack.
LIMIT_SHARE = 2


def tile_budget(method: FusionMethod | None = None) -> int:
    """Working memory for one tile: a quarter of what is free now, between 256 and 640 MiB,
    and never more than a quarter of what the process's own memory limit leaves.

    640 MiB keeps a whole run (libraries, model, the readers' and writers' buffers and
    allocator slack besides the tile: about 0.7 GB) under 1.5 GB however large the stack and
    whatever its channels and output format. The machine's free memory is a soft bound (the
    system makes room), hence the 256 MiB floor; a limit (``ulimit -v``, a cgroup's) is a wall
    past which the process fails or is killed, so under one tiles shrink as far as the method
    allows. A method running on a CUDA GPU keeps its working set there instead, so its tiles
    take half the free device memory (the host then holds only the tile's data, a quarter of
    what it has free).
    """
    free = system_memory() or 0
    device = getattr(method, "device", None)
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        gpu_free, _ = torch.cuda.mem_get_info(device)
        budget = int(max(TILE_BUDGET_MIN, min(gpu_free // 2, free // 4)))
    else:
        budget = int(np.clip(free // 4, TILE_BUDGET_MIN, TILE_BUDGET_MAX))
    left = sizes.limit_left()
    if left is None:
        return budget
    return min(budget, max(left - getattr(method, "reserve_bytes", 0), 0) // LIMIT_SHARE)


def pixel_bytes(stack: Stack, method: FusionMethod) -> int:
    """Working memory of one pixel of a tile's window, every plane and channel."""
    # Lazy stacks are read ahead into two buffers of their own dtype (TileFuser.each).
    read_ahead = 2 * np.dtype(stack.dtype).itemsize * stack.n_channels if is_lazy(stack.data) else 0
    return stack.n_slices * (4 * stack.n_channels + read_ahead + method.bytes_per_voxel)


def smallest_tile(method: FusionMethod) -> int:
    """The smallest tile core the automatic size goes down to."""
    return max(4 * method.align, min_tile(method.halo, method.align))


def check_tile_memory(stack: Stack, method: FusionMethod) -> None:
    """Refuse up front a stack whose smallest tile would not fit in what the process's memory
    limit leaves (see :data:`LIMIT_SHARE`), rather than fail on the first tile or be killed by
    the kernel halfway."""
    left = sizes.limit_left()
    if left is None:
        return
    side = smallest_tile(method) + 2 * method.halo
    height, width = (min(side, n) for n in stack.shape_yx)
    need = method.reserve_bytes + height * width * pixel_bytes(stack, method) * LIMIT_SHARE
    if need > left:
        classical = method.reserve_bytes <= CLASSICAL_RESERVE
        lighter = "" if classical else ", or with a classical method (wavelet, argmax)"
        raise InputError(
            f"Fusing this {stack.n_slices}-plane stack with the {method.name} method needs about "
            f"{gib(need)} of memory even in its smallest tiles, but this process's memory limit "
            f"leaves {gib(left)}; raise the limit (ulimit -v, or the job's or container's) or "
            f"fuse fewer planes{lighter}."
        )


def auto_tile(stack: Stack, method: FusionMethod, budget: int | None = None) -> int:
    """A tile core size whose haloed block fits ``budget`` bytes, splitting the plane evenly.

    A stack that fits is one tile (no halo work at all); otherwise the plane is cut into the
    fewest equal tiles that fit, so no thin remainder tile pays a full halo.
    """
    window = int(np.sqrt((budget or tile_budget(method)) / pixel_bytes(stack, method)))
    longest = max(stack.shape_yx)
    if window >= longest:
        return -(-longest // method.align) * method.align
    smallest = smallest_tile(method)
    core = max(window - 2 * method.halo, smallest)
    n_tiles = -(-longest // core)
    core = -(-longest // n_tiles)
    return max(-(-core // method.align) * method.align, smallest)


@dataclass(frozen=True)
class FusionPlan:
    """One focus stack, checked and ready: its method, normalisation and tiles.

    ``reader`` cuts a tile's window when plain indexing will not do (aligned planes);
    running the plan streams tiles into any :class:`Sink`.
    """

    stack: Stack
    method: FusionMethod
    norm: Normalisation
    tile_size: int
    reader: Any = None  # has window(rows, cols) -> (Z, y, x, C) and coverage(rows, cols)
    retoucher: Any = None  # applies the options' retouch mask to each tile (see .retouch)

    @property
    def window(self) -> Any:
        """How a tile's (Z, y, x, C) window is cut: through the reader, else the stack's own."""
        return self.reader.window if self.reader is not None else self.stack.window

    @property
    def n_tiles(self) -> int:
        return count_tiles(self.stack.shape_yx, self.tile_size, self.method.align)

    def tiles(self) -> list[Tile]:
        return list(
            tile_grid(self.stack.shape_yx, self.tile_size, self.method.halo, self.method.align)
        )

    def run(self, sink: Sink) -> Generator[Progress, None, None]:
        """Fuse every tile into ``sink``, each next one read while this one is fused."""
        total = self.n_tiles
        yield Progress(0, total)
        fuse_tile = TileFuser(self.stack.data, self.norm, self.method, self.window)
        for done, (tile, result) in enumerate(fuse_tile.each(self.tiles()), 1):
            sink.write(tile, result)
            yield Progress(done, total)


@dataclass
class Alignment:
    """The planes' transforms of one time point and how many pixels every plane covers."""

    transforms: list[Transform]
    covered: int = 0
    seen: int = 0

    @property
    def fraction(self) -> float:
        return self.covered / self.seen if self.seen else 1.0


@dataclass
class AlignmentLog:
    """Alignments by time point (None without a time axis), filled as parts are planned."""

    by_time: dict[int | None, Alignment] = field(default_factory=dict)


@dataclass(frozen=True)
class Part:
    """One focus stack of a job: time point ``t`` and, in separate mode, channel ``c``."""

    t: int | None
    c: int | None


class JobSink(Protocol):
    """Where a job's tiles go: every part writes into the same outputs."""

    def write(self, part: Part, tile: Tile, result: TileResult) -> None: ...


class PartSink:
    """A :class:`Sink` for one part, forwarding its tiles to the job's sink, and for aligned
    planes the part of each tile that every plane covers (once per time point)."""

    def __init__(self, sink: JobSink, part: Part, plan: FusionPlan, log: AlignmentLog) -> None:
        self.sink, self.part, self.plan = sink, part, plan
        aligned = plan.reader is not None and part.c in (None, 0)
        self.alignment = log.by_time.get(part.t) if aligned else None

    def write(self, tile: Tile, result: TileResult) -> None:
        if self.plan.retoucher is not None:
            result = retouched(self.plan.retoucher, tile, result)
        self.sink.write(self.part, tile, result)
        if self.alignment is not None:
            mask = self.plan.reader.coverage(*tile.write)
            self.alignment.covered += int(mask.sum())
            self.alignment.seen += int(mask.size)
            cover = getattr(self.sink, "cover", None)
            if cover is not None:
                cover(self.part, tile, mask)


@dataclass(frozen=True)
class Job:
    """A whole fusion: the image, the options, the method, the parts and the outputs' axes.

    ``fused_axes`` / ``map_axes`` say what the outputs hold (e.g. "TCYX" and "TYX");
    ``focus_scale`` turns slices into µm (None: the map stays in slices).
    """

    image: Image
    options: FuseOptions
    method: FusionMethod
    parts: tuple[Part, ...]
    tile_size: int
    fused_axes: str
    map_axes: str
    focus_scale: float | None
    alignments: AlignmentLog = field(default_factory=AlignmentLog, compare=False)

    def shape(self, axes: str) -> tuple[int, ...]:
        """Shape of an output with these axes (letters of ``T C Y X S``); C and S count the
        channels or the RGB samples."""
        image = self.image
        height, width = image.shape_yx
        lengths = {"T": image.n_times or 1, "C": image.n_channels, "S": image.n_channels}
        return tuple({"Y": height, "X": width, **lengths}[a] for a in axes)

    @property
    def n_tiles(self) -> int:
        shape_yx = self.image.shape_yx
        return len(self.parts) * count_tiles(shape_yx, self.tile_size, self.method.align)

    def stack(self, part: Part) -> Stack:
        """The (Z, Y, X, C) focus stack of ``part``, as lazy as the image."""
        axes, channel = self.image.axes, self.image.channel_letter
        data = self.image.data
        if part.t is not None:
            index = [slice(None)] * len(axes)
            index[axes.index("T")] = part.t
            data, axes = data[tuple(index)], axes.replace("T", "")
        if part.c is not None and channel is not None:
            index = [slice(None)] * len(axes)
            index[axes.index(channel)] = part.c
            data, axes, channel = data[tuple(index)], axes.replace(channel, ""), None
        letters = "ZYX" + (channel or "")
        order = [axes.index(a) for a in letters]
        if order != list(range(len(order))):
            data = data.transpose(order)
        if channel is None:
            return as_stack(data, rgb=False)
        return as_stack(data, channel_axis=3, rgb=channel == "S")

    def plan(self, part: Part) -> FusionPlan:
        """The part's plan: its stack, normalisation and (when aligned) its aligned reader."""
        stack = self.stack(part)
        opts = self.options
        norm = normalisation(stack, opts.focus_channel, opts.correct_brightness)
        reader = None
        if opts.align is not None:
            reader = self.aligned_reader(part, stack, norm)
        plan = FusionPlan(stack, self.method, norm, self.tile_size, reader)
        if opts.retouch is None:
            return plan
        return replace(plan, retoucher=self.retoucher(part, plan))

    def retoucher(self, part: Part, plan: FusionPlan) -> Any:
        """What applies the retouch mask to ``part``'s tiles: its planes read as the fusion
        reads them (through the alignment), other fusions computed window by window."""
        from .retouch import OtherWindow, Retoucher

        opts, stack = self.options, plan.stack
        mask = opts.retouch
        others = {}
        for label, other in mask.sources.items():
            if label in mask.used:
                weights = opts.weights if other.method == "pdmnet" else None
                method = cached_method(other.method, opts.device, weights, other.selection)
                fuser = TileFuser(stack.data, plan.norm, method, plan.window)
                others[label] = OtherWindow(fuser)
        dtype = np.dtype(self.image.data.dtype)
        fusion = None
        if mask.match_brightness:
            own = TileFuser(stack.data, plan.norm, self.method, plan.window)
            fusion = OtherWindow(own).fused
        return Retoucher(
            mask, stack.n_slices, stack.shape_yx, dtype, plan.window, others, part.t, fusion
        )

    def aligned_reader(self, part: Part, stack: Stack, norm: Normalisation) -> Any:
        """Read through the planes' transforms, estimated once per time point."""
        from .align import estimate_from_centre
        from .aligned_reading import AlignedReader

        assert self.options.align is not None
        known = self.alignments.by_time.get(part.t)
        if known is None:
            whole, lum = stack, norm
            if part.c is not None:  # one channel of several: align on them all, as combined
                whole = self.stack(Part(part.t, None))
                lum = normalisation(whole, self.options.focus_channel)
            transforms = estimate_from_centre(whole.data, lum.luminance, self.options.align)
            known = self.alignments.by_time[part.t] = Alignment(list(transforms))
        return AlignedReader(stack.data, tuple(known.transforms), cut=stack.window)

    def plans(self) -> Iterator[tuple[Part, FusionPlan]]:
        for part in self.parts:
            yield part, self.plan(part)

    def run(self, sink: JobSink) -> Generator[Progress, None, None]:
        """Fuse every part on this machine into ``sink``, yielding progress over all tiles."""
        total = self.n_tiles
        yield Progress(0, total)
        done = 0
        for part, plan in self.plans():
            for step in plan.run(PartSink(sink, part, plan, self.alignments)):
                if step.done:
                    yield Progress(done + step.done, total)
            done += plan.n_tiles


def retouched(retoucher: Any, tile: Tile, result: TileResult) -> TileResult:
    """A tile's result with the retouch mask applied to its core (fused in the output type)."""
    changed = retoucher.window(*tile.write, result.fused, result.focus)
    if changed is None:
        return result
    fused, focus, _ = changed
    return result._replace(fused=fused, focus=focus)


def focus_scale(image: Image, options: FuseOptions, source: str = "The image") -> float | None:
    """The Z step the focus map is multiplied by (µm per slice), or None for slices."""
    if not options.physical_focus:
        return None
    if options.z_spacing is not None:
        return float(options.z_spacing)
    if image.z_step_um:
        return float(image.z_step_um)
    raise InputError(
        f"{source} records no Z step in micrometres, so the focus map cannot be given in µm; "
        "pass the step with --z-spacing UM."
    )


def _check_channels(image: Image, options: FuseOptions) -> None:
    axes, channel, n_channels = image.axes, image.channel_letter, image.n_channels
    if options.channel_mode == "separate" and channel is None:
        raise InputError(
            f"Axes {axes!r} have no channel axis to fuse separately; add C (or S) to the axes "
            "or use the combined mode."
        )
    k = options.focus_channel
    if k is not None and channel is None:
        raise InputError(
            f"Axes {axes!r} have no channel axis, so there is no focus channel to choose."
        )
    if k is not None and k >= n_channels:
        raise InputError(
            f"Focus channel {k} does not exist; the data has channels 0 to {n_channels - 1}."
        )


def checked_method(options: FuseOptions) -> FusionMethod:
    """The options' method (built once per process), with the tile size checked against it;
    front ends call it before reading any input, so that a batch refuses bad options at once."""
    method = cached_method(options.method, options.device, options.weights, options.selection)
    if options.tile is not None:
        check_tile(options.tile, method.name, method.halo, method.align)
    return method


def plan_job(image: Image, options: FuseOptions, *, source: str = "The image") -> Job:
    """Check ``image`` against ``options`` and cut it into parts, without reading pixels
    (but for the first part's stack checks)."""
    _check_channels(image, options)
    scale = focus_scale(image, options, source)
    channel, n_times = image.channel_letter, image.n_times
    separate = options.channel_mode == "separate"
    times: list[int | None] = [None] if n_times is None else list(range(n_times))
    channels: list[int | None] = list(range(image.n_channels)) if separate else [None]
    if separate and channel == "S":
        raise InputError(
            "The RGB colours of a pixel are fused together so that they stay registered; name "
            "the axis C (e.g. --axes ZYXC) to fuse each colour on its own."
        )
    parts = tuple(Part(t, c) for t in times for c in channels)
    if options.retouch is not None:
        from .retouch import check_mask

        check_mask(options.retouch, image.n_planes, image.shape_yx, n_times, source)
    method = checked_method(options)
    t_axis = "T" if n_times is not None else ""
    fused_axes = t_axis + ("C" if channel == "C" else "") + "YX" + ("S" if channel == "S" else "")
    map_axes = t_axis + ("C" if separate else "") + "YX"
    draft = Job(image, options, method, parts, 1, fused_axes, map_axes, scale)
    first = draft.stack(parts[0])  # checks shape, dtype and sides once
    check_tile_memory(first, method)
    tile = options.tile or auto_tile(first, method)
    return Job(image, options, method, parts, tile, fused_axes, map_axes, scale)
