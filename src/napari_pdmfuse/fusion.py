"""The fusion loop: tiles in, stitched results out, progress yielded along the way.

:func:`fuse_iter` is a plain generator — napari's ``thread_worker`` runs it in the widget, the CLI
drives a progress bar from it, and :func:`fuse` simply drains it — so there is one code path for
every way of using the product.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .executing import TileFuser
from .methods import DEFAULT_METHOD, get_method
from .methods.base import FusionMethod, TileResult
from .model.device import check_device_name
from .sizes import check_memory, check_tile, min_tile
from .stack import Normalisation, Stack, as_stack, is_lazy, normalisation, to_dtype
from .tiling import Tile, count_tiles, tile_grid


@dataclass
class FusionResult:
    """What a fusion produces.

    ``fused`` has the input's dtype and channel layout; ``focus_map`` is the position of the
    in-focus plane (0-based slice units, fractional, or physical z when ``focus_unit`` says so);
    ``confidence`` is in [0, 1], zero where the stack holds no focus information.
    """

    fused: np.ndarray
    focus_map: np.ndarray
    confidence: np.ndarray
    method: str
    focus_unit: str = "slice"


@dataclass(frozen=True)
class Progress:
    done: int
    total: int


class Sink(Protocol):
    """Where stitched tile cores go: memory by default, a streaming file writer for big data."""

    def write(self, tile: Tile, result: TileResult) -> None: ...


class MemorySink:
    def __init__(self, stack: Stack) -> None:
        height, width = stack.shape_yx
        self.fused = np.empty((height, width, stack.n_channels), dtype=stack.dtype)
        self.focus = np.empty((height, width), dtype=np.float32)
        self.confidence = np.empty((height, width), dtype=np.float32)
        self.dtype = stack.dtype

    def write(self, tile: Tile, result: TileResult) -> None:
        self.fused[tile.write] = to_dtype(result.fused, self.dtype)
        self.focus[tile.write] = result.focus
        self.confidence[tile.write] = result.confidence


def tile_budget(method: FusionMethod | None = None) -> int:
    """Working memory for one tile: a quarter of what is free now, between 256 and 768 MiB.

    768 MiB keeps a whole run (libraries, model and allocator slack besides the tile: about
    0.5 GB) under 1.5 GB however large the stack. A method running on a CUDA GPU keeps its
    working set there instead, so its tiles take half the free device memory (the host then
    holds only the tile's data, a quarter of what it has free).
    """
    import psutil

    host = psutil.virtual_memory().available // 4
    device = getattr(method, "device", None)
    if device is not None and getattr(device, "type", None) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(device)
        return int(max(256 * 2**20, min(free // 2, host)))
    return int(np.clip(host, 256 * 2**20, 768 * 2**20))


def auto_tile(stack: Stack, method: FusionMethod, budget: int | None = None) -> int:
    """A tile core size whose haloed block fits ``budget`` bytes, splitting the plane evenly.

    A stack that fits is one tile (no halo work at all); otherwise the plane is cut into the
    fewest equal tiles that fit, so no thin remainder tile pays a full halo.
    """
    # Lazy stacks are read ahead into two buffers of their own dtype (TileFuser.each).
    read_ahead = 2 * np.dtype(stack.dtype).itemsize * stack.n_channels if is_lazy(stack.data) else 0
    per_pixel = stack.n_slices * (4 * stack.n_channels + read_ahead + method.bytes_per_voxel)
    window = int(np.sqrt((budget or tile_budget(method)) / per_pixel))
    longest = max(stack.shape_yx)
    if window >= longest:
        return -(-longest // method.align) * method.align
    smallest = max(4 * method.align, min_tile(method.halo, method.align))
    core = max(window - 2 * method.halo, smallest)
    n_tiles = -(-longest // core)
    core = -(-longest // n_tiles)
    return max(-(-core // method.align) * method.align, smallest)


@dataclass(frozen=True)
class FusionPlan:
    """Everything decided before the first tile is read: checked input, method, tiles, scaling.

    Building the plan validates the input and options, so a bad call fails before any output
    exists; running it streams tiles into any :class:`Sink`.
    """

    stack: Stack
    method: FusionMethod
    norm: Normalisation
    tile_size: int

    @property
    def n_tiles(self) -> int:
        return count_tiles(self.stack.shape_yx, self.tile_size, self.method.align)

    def run(self, sink: Sink) -> Generator[Progress, None, None]:
        """Fuse every tile into ``sink``, yielding progress after each."""
        stack, method = self.stack, self.method
        total = self.n_tiles
        yield Progress(0, total)
        tiles = list(tile_grid(stack.shape_yx, self.tile_size, method.halo, method.align))
        fuse_tile = TileFuser(stack.data, self.norm, method, stack.window)  # checks, OOM, crop
        for done, (tile, result) in enumerate(fuse_tile.each(tiles), 1):
            sink.write(tile, result)
            yield Progress(done, total)


def plan(
    data: object,
    *,
    method: str = DEFAULT_METHOD,
    z_axis: int = 0,
    channel_axis: int | None = None,
    rgb: bool | None = None,
    z_spacing: float | None = None,
    tile: int | None = None,
    device: str = "auto",
    weights: str | None = None,
    focus_channel: int | None = None,
    correct_brightness: bool = False,
) -> FusionPlan:
    """Check the input and options and decide how to fuse, without reading the stack.

    ``weights`` is a PDMNet weights file to use instead of the shipped one (pdmnet only);
    ``focus_channel`` decides focus on that channel alone instead of all channels combined;
    ``correct_brightness`` evens out the planes' brightness (lamp flicker, bleaching) in the
    focus decision and the fused image alike.
    """
    stack = as_stack(data, z_axis=z_axis, channel_axis=channel_axis, rgb=rgb, z_spacing=z_spacing)
    fusion = get_method(method, device=check_device_name(device), weights=weights)
    if tile is not None:
        check_tile(tile, fusion.name, fusion.halo, fusion.align)
    tile_size = tile or auto_tile(stack, fusion)
    norm = normalisation(stack, focus_channel, correct_brightness)
    return FusionPlan(stack, fusion, norm, tile_size)


def fuse_iter(data: object, **options: object) -> Generator[Progress, None, FusionResult]:
    """Fuse a focus stack in memory, yielding :class:`Progress` per tile.

    Options are those of :func:`plan`: ``method``, ``z_axis``, ``channel_axis``, ``rgb``,
    ``z_spacing`` (physical step between planes: the focus map is then in those units),
    ``tile`` (core size in px, automatic by default), ``device`` (auto, cpu, cuda, mps),
    ``weights`` (a PDMNet weights file), ``focus_channel`` (decide on one channel) and
    ``correct_brightness`` (even out the planes' brightness before fusing). Results
    larger than the free memory are refused before any work; the ``pdmfuse`` command streams
    them to disk instead.
    """
    job = plan(data, **options)
    check_memory(job.stack.shape_yx, job.stack.n_channels, job.stack.dtype)
    sink = MemorySink(job.stack)
    yield from job.run(sink)
    focus, unit = sink.focus, "slice"
    spacing = job.stack.z_spacing
    if spacing:
        focus, unit = focus * np.float32(spacing), "physical"
    return FusionResult(
        fused=job.stack.output_array(sink.fused),
        focus_map=focus,
        confidence=sink.confidence,
        method=job.method.name,
        focus_unit=unit,
    )


def fuse(data: object, **options: object) -> FusionResult:
    """Fuse a focus stack in memory in one call; see :func:`fuse_iter` for the options."""
    gen = fuse_iter(data, **options)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
