"""A job's outputs as files, written tile by tile whatever the job's axes.

Every part of a job (a time point; a channel fused on its own) writes its tiles into the same
files. The fused image keeps the input's dtype, T and C axes (or RGB samples) and channel
names; the maps are float32 with a C axis only when channels were fused separately; the
coverage mask of aligned planes is uint8 (255 where every plane saw the pixel). All carry the
pixel size, time interval, image name, what their values are and how they were made.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from .methods import DEFAULT_SELECTION
from .methods.base import TileResult
from .planning import Job, Part
from .stack import to_dtype
from .tiling import Tile
from .version import __version__
from .writing import DEFAULT_NGFF_VERSION, OutputMeta, check_format, open_output
from .writing.omezarr import ZarrPixels

#: What a run can write, in the order outputs are named.
KINDS = ("fused", "focus_map", "confidence", "coverage")


@cache
def _weights_sha256(path: str | None, stamp: tuple[int, int] | None) -> str:
    """The SHA-256 of PDMNet's weights: the shipped file's from its card (checked when loaded),
    a user's file hashed once per version of it (``stamp``: modification time and size)."""
    from .model.weights import CARD_PATH, sha256

    if path is None:
        return str(json.loads(CARD_PATH.read_text())["sha256"])
    return sha256(Path(path))


def fusion_record(job: Job) -> dict[str, str]:
    """How the outputs were made (package version, method, weights, the options that change
    the pixels), recorded in each so that a result can be traced and made again."""
    options = job.options
    record = {"software": "napari-pdmfuse", "version": __version__, "method": options.method}
    if options.method == "pdmnet":
        weights = options.weights
        stat = None if weights is None else Path(weights).stat()
        stamp = None if stat is None else (stat.st_mtime_ns, stat.st_size)
        record["weights_sha256"] = _weights_sha256(weights, stamp)
    chosen = {
        "channel_mode": options.channel_mode if job.image.has_channels else None,
        "focus_channel": options.focus_channel,
        "align": options.align,
        "z_spacing_um": job.focus_scale,  # the step the map was scaled by, given or read
        "correct_brightness": "yes" if options.correct_brightness else None,
        # Absent: the blend, as outputs made before the choice existed.
        "selection": options.selection if options.selection != DEFAULT_SELECTION else None,
    }
    record |= {k: str(v) for k, v in chosen.items() if v is not None}
    if options.retouch is not None:  # the mask by name and hash, and what its labels took
        record |= options.retouch.record()
    return record


def output_specs(job: Job) -> dict[str, tuple[str, tuple[int, ...], np.dtype, OutputMeta]]:
    """Axes, shape, dtype and metadata of every output ``job`` can write."""
    image = job.image
    names = tuple(image.channel_names) if image.channel_names else None
    base = {
        "pixel_size": image.pixel_size,
        "unit": image.unit,
        "time_interval": image.time_interval,
        "name": image.name,
        "fusion": fusion_record(job),
    }
    map_names = names if "C" in job.map_axes else None
    unit = "slice" if job.focus_scale is None else "micrometer"
    cover_axes = ("T" if "T" in job.fused_axes else "") + "YX"
    f32 = np.dtype(np.float32)
    return {
        "fused": (
            job.fused_axes,
            job.shape(job.fused_axes),
            np.dtype(image.data.dtype),
            OutputMeta(channel_names=names if "C" in job.fused_axes else None, **base),
        ),
        "focus_map": (
            job.map_axes,
            job.shape(job.map_axes),
            f32,
            OutputMeta(channel_names=map_names, values="focus position", value_unit=unit, **base),
        ),
        "confidence": (
            job.map_axes,
            job.shape(job.map_axes),
            f32,
            OutputMeta(channel_names=map_names, values="confidence", value_unit="0 to 1", **base),
        ),
        "coverage": (
            cover_axes,
            job.shape(cover_axes),
            np.dtype(np.uint8),
            OutputMeta(values="coverage", value_unit="255 where every plane saw the pixel", **base),
        ),
    }


def check_formats(job: Job, paths: dict[str, Path]) -> None:
    """Refuse, before any work, an output (by kind) whose format cannot hold its pixels."""
    specs = output_specs(job)
    for kind, path in paths.items():
        check_format(path, specs[kind][2])


def output_bytes(job: Job, kinds: list[str]) -> dict[str, int]:
    """Bytes of each output's pixels, for the disk-space check."""
    specs = output_specs(job)
    return {k: int(np.prod(specs[k][1])) * specs[k][2].itemsize for k in kinds}


class FileOutputs:
    """A job sink writing each tile core into its place in the output files (``paths`` by
    kind, usually temporary names that :func:`~napari_pdmfuse.writing.atomic.atomic_files`
    moves into place once :meth:`finish` has completed them); OME-Zarr outputs are written as
    NGFF ``ome_zarr_version``, as are all outputs ``in_store`` (groups inside a store, whose
    names say nothing of their format)."""

    def __init__(
        self,
        job: Job,
        paths: dict[str, Path],
        *,
        ome_zarr_version: str = DEFAULT_NGFF_VERSION,
        in_store: bool = False,
    ) -> None:
        self.job = job
        specs = output_specs(job)
        self.dtype = np.dtype(job.image.data.dtype)
        self.scale = None if job.focus_scale is None else np.float32(job.focus_scale)
        self.pixels: dict[str, Any] = {}
        try:
            for kind, path in paths.items():
                axes, shape, dtype, meta = specs[kind]
                if in_store:  # an image group inside a store (a plate's field): OME-Zarr
                    self.pixels[kind] = ZarrPixels(path, axes, shape, dtype, meta, ome_zarr_version)
                    continue
                self.pixels[kind] = open_output(
                    path, axes, shape, dtype, meta, ome_zarr_version=ome_zarr_version
                )
        except BaseException:
            self.close()
            raise
        self.fused_channels = "C" in job.fused_axes

    def write(self, part: Part, tile: Tile, result: TileResult) -> None:
        y, x = tile.write[0].start, tile.write[1].start
        t = () if part.t is None else (part.t,)
        if "fused" in self.pixels:  # the viewer may ask for the maps alone
            self._write_fused(part, t, y, x, to_dtype(result.fused, self.dtype))
        lead = t if part.c is None else (*t, part.c)
        focus = result.focus if self.scale is None else result.focus * self.scale
        for kind, values in (("focus_map", focus), ("confidence", result.confidence)):
            if kind in self.pixels:
                self.pixels[kind].write(lead, y, x, values)

    def _write_fused(
        self, part: Part, t: tuple[int, ...], y: int, x: int, fused: np.ndarray
    ) -> None:
        pixels = self.pixels["fused"]
        if part.c is not None:  # one channel fused on its own
            pixels.write((*t, part.c), y, x, fused[..., 0])
        elif self.fused_channels:
            for c in range(fused.shape[-1]):
                pixels.write((*t, c), y, x, fused[..., c])
        elif self.job.image.rgb:
            pixels.write(t, y, x, fused)
        else:
            pixels.write(t, y, x, fused[..., 0])

    def cover(self, part: Part, tile: Tile, mask: np.ndarray) -> None:
        if "coverage" in self.pixels:
            t = () if part.t is None else (part.t,)
            values = mask.astype(np.uint8) * np.uint8(255)
            self.pixels["coverage"].write(t, tile.write[0].start, tile.write[1].start, values)

    def finish(self) -> None:
        """Complete every output once all tiles are in (pyramids, OME-TIFF pages)."""
        for pixels in self.pixels.values():
            pixels.finish()

    def close(self) -> None:
        for pixels in self.pixels.values():
            pixels.close()
