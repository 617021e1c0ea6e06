"""Retouching as data: a label mask that says, per pixel, where the fused image comes from.

A retouch mask is an integer image the size of the result, as napari's Labels layer saves it:
0 keeps the fusion, k ≥ 1 takes plane k (counting from 1) and labels above the plane count take
another fusion of the same stack (another method, or PDMNet's hard selection), named in the
mask's metadata. Applying it replaces the fused pixels under the labels and their focus-map
values (k - 1 for plane k, the other fusion's own focus map otherwise); the confidence map,
which describes the stack, stays as it is. Optionally each taken plane's local brightness is
matched to its surroundings.

The result of a retouch is a function of the stack, the mask and the fusion at each pixel, so
it can be computed window by window: the command line applies it to each tile as it is fused,
the widget to the bounding box of each brush stroke, and both give the same pixels. Focus
values are produced in slices; whoever writes the focus map scales them, as for the fusion.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, ReadError
from .methods import DEFAULT_SELECTION, METHODS, SELECTIONS, hard_refusal
from .stack import read_now, to_dtype

#: Key of the retouch record in a mask TIFF's JSON description.
MASK_KEY = "pdmfuse_retouch"

#: Gaussian width (px) of the local brightness that a taken plane is matched to, and where
#: the Gaussian is cut off (in widths). The local means are taken on blocks of MATCH_BLOCK px
#: anchored to the image (so any window gives the same values) and interpolated between
#: block centres: the brightness varies slowly, and 16 times fewer pixels keep a stroke live.
MATCH_SIGMA = 16.0
MATCH_TRUNCATE = 3.0
MATCH_BLOCK = 4
_REACH_BLOCKS = int(MATCH_TRUNCATE * MATCH_SIGMA / MATCH_BLOCK + 0.5)

#: How far (px) a label changes the matched brightness around it: the Gaussian's reach, one
#: block of interpolation and one of a block's own extent.
MATCH_RADIUS = (_REACH_BLOCKS + 2) * MATCH_BLOCK

#: Weight of the painted pixels themselves in the local means: next to nothing beside the
#: surroundings, all there is where no surrounding pixel is within reach.
PAINTED_WEIGHT = 1e-3


@dataclass(frozen=True)
class OtherFusion:
    """A source that is another fusion of the same stack: a method, and PDMNet's selection."""

    method: str
    selection: str = DEFAULT_SELECTION

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(
                f"The retouch source {self.method!r} is not a method; name one of "
                f"{', '.join(METHODS)}."
            )
        if self.selection not in SELECTIONS:
            raise InputError(
                f"The retouch source's selection {self.selection!r} is unknown; choose one of "
                f"{', '.join(SELECTIONS)}."
            )
        if self.selection != DEFAULT_SELECTION and self.method != "pdmnet":
            raise InputError(hard_refusal(self.method))

    @property
    def name(self) -> str:
        """ "wavelet", "pdmnet hard": how masks and records spell the source."""
        return (
            self.method
            if self.selection == DEFAULT_SELECTION
            else f"{self.method} {self.selection}"
        )

    @classmethod
    def parse(cls, text: str) -> OtherFusion:
        """The source a mask names: a method, optionally followed by a selection."""
        words = str(text).split()
        if not 1 <= len(words) <= 2:
            raise InputError(
                f"The retouch source {text!r} is not a method name (e.g. 'wavelet' or "
                "'pdmnet hard')."
            )
        return cls(*words)


#: The other fusions a retouch can take from, in the order the widget offers them.
OTHER_FUSIONS = (*(OtherFusion(m) for m in METHODS), OtherFusion("pdmnet", "hard"))


@dataclass(frozen=True, eq=False)
class RetouchMask:
    """A retouch: ``labels`` (Y, X), or (T, Y, X) with one mask per time point, integers ≥ 0;
    ``sources`` names the other fusion taken under each label above the plane count;
    ``match_brightness`` scales each taken plane to the local brightness around it; ``planes``
    is the plane count the mask was made for, when known; ``name`` says where it came from."""

    labels: Any
    sources: Mapping[int, OtherFusion] = field(default_factory=dict)
    match_brightness: bool = False
    planes: int | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        labels = self.labels
        if not hasattr(labels, "shape") or not hasattr(labels, "dtype"):
            labels = np.asarray(labels)
        where = self.name or "The retouch mask"
        if np.dtype(labels.dtype).kind not in "ui" or labels.ndim not in (2, 3):
            raise InputError(
                f"{where} is not a label image: it must be 2-D (or one 2-D mask per time "
                f"point) of whole numbers, not {labels.ndim}-D {labels.dtype}."
            )
        sources = {int(k): v if isinstance(v, OtherFusion) else OtherFusion.parse(v)
                   for k, v in dict(self.sources).items()}  # fmt: skip
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "sources", dict(sorted(sources.items())))

    def labels_at(self, t: int | None) -> Any:
        """The (Y, X) labels of time point ``t`` (the one mask, when there is one)."""
        if self.labels.ndim == 2:
            return self.labels
        return self.labels[0 if t is None else t]

    @cached_property
    def used(self) -> tuple[int, ...]:
        """The labels that occur in the mask, sorted (0 included when present)."""
        return tuple(int(k) for k in np.unique(np.asarray(self.labels)))

    def sha256(self) -> str:
        """The SHA-256 of the labels as unsigned 32-bit integers, whatever type they came in,
        so the same mask saved by napari or by this plugin hashes alike."""
        labels = np.ascontiguousarray(self.labels, dtype="<u4")
        return hashlib.sha256(labels.tobytes()).hexdigest()

    def record(self) -> dict[str, str]:
        """How the outputs were retouched, for their metadata."""
        record = {"retouch_mask": self.name or "array", "retouch_sha256": self.sha256()}
        if self.sources:
            used = set(self.used)
            named = [f"{k}: {s.name}" for k, s in self.sources.items() if k in used]
            if named:
                record["retouch_sources"] = ", ".join(named)
        if self.match_brightness:
            record["retouch_match_brightness"] = "yes"
        return record

    def description(self) -> dict[str, Any]:
        """The JSON-able record saved with the labels (see :func:`write_mask`)."""
        return {
            "sources": {str(k): s.name for k, s in self.sources.items()},
            "match_brightness": self.match_brightness,
            **({"planes": self.planes} if self.planes is not None else {}),
        }


def as_mask(value: Any) -> RetouchMask:
    """A :class:`RetouchMask` from a mask, a label array (planes only) or a TIFF's path."""
    if isinstance(value, RetouchMask):
        return value
    if isinstance(value, (str, Path)):
        return read_mask(value)
    return RetouchMask(value)


def read_mask(path: str | Path) -> RetouchMask:
    """Read a retouch mask from a TIFF: labels, and the sources its description names."""
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise ReadError(f"The retouch mask {path} does not exist; give the mask's TIFF file.")
    try:
        with tifffile.TiffFile(path) as tif:
            labels = tif.asarray()
            shaped = tif.shaped_metadata or ({},)
    except (OSError, ValueError, tifffile.TiffFileError) as exc:
        raise ReadError(
            f"The retouch mask {path} cannot be read as a TIFF ({exc}); save it again."
        ) from None
    record = shaped[0].get(MASK_KEY, {}) if isinstance(shaped[0], dict) else {}
    labels = np.squeeze(labels) if labels.ndim > 2 else labels  # napari may add axes of 1
    return RetouchMask(
        compact(labels, str(path)),
        sources=record.get("sources", {}),
        match_brightness=bool(record.get("match_brightness", False)),
        planes=record.get("planes"),
        name=str(path),
    )


def compact(labels: np.ndarray, where: str = "The retouch mask") -> np.ndarray:
    """The labels in the smallest unsigned type that holds them (napari saves 32 bits)."""
    labels = np.asarray(labels)
    if labels.size and int(labels.min()) < 0:
        raise InputError(f"{where} has negative labels; use 0 to keep the fusion and k ≥ 1.")
    top = int(labels.max(initial=0))
    dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.uint32
    return labels.astype(dtype, copy=False)


def write_mask(path: str | Path, mask: RetouchMask, *, overwrite: bool = False) -> Path:
    """Save ``mask`` as a compressed TIFF whose JSON description names its sources, whole or
    not at all; :func:`read_mask` (and ``pdmfuse fuse --retouch``) read it back."""
    import tifffile

    from .writing.atomic import atomic_files, check_outputs

    (target,) = check_outputs([path], overwrite=overwrite)
    labels = compact(np.asarray(mask.labels))
    with atomic_files([target], overwrite=overwrite) as (temp,):
        tifffile.imwrite(
            temp,
            labels,
            compression="zlib",
            metadata={MASK_KEY: json.loads(json.dumps(mask.description()))},
            software="napari-pdmfuse",
        )
    return target


def check_mask(
    mask: RetouchMask,
    n_planes: int,
    shape_yx: tuple[int, int],
    n_times: int | None,
    source: str = "The image",
) -> None:
    """Refuse a mask that does not fit the result, or whose labels name no source."""
    shape = tuple(int(n) for n in mask.labels.shape)
    where = mask.name or "The retouch mask"
    fits = shape == shape_yx or (n_times is not None and shape == (n_times, *shape_yx))
    if not fits:
        expected = "×".join(map(str, shape_yx))
        raise InputError(
            f"{where} is {'×'.join(map(str, shape))} px but the result of {source} is "
            f"{expected} px; paint the mask on this result."
        )
    if mask.planes is not None and mask.planes != n_planes:
        raise InputError(
            f"{where} was made for a stack of {mask.planes} planes but {source} has "
            f"{n_planes}; its labels would take other planes, so paint it again on this stack."
        )
    clash = [k for k in mask.sources if k <= n_planes]
    if clash:
        raise InputError(
            f"{where} names a fusion under label {clash[0]}, which is plane {clash[0]} of the "
            f"{n_planes}; other fusions take labels above the plane count."
        )
    unnamed = [k for k in mask.used if k > n_planes and k not in mask.sources]
    if unnamed:
        raise InputError(
            f"{where} has label {unnamed[0]} but the stack has only {n_planes} planes and the "
            "mask names no fusion for that label; save the mask from the widget, which records "
            "its sources."
        )


#: Reads every plane of a window, (Z, h, w, C), in the data's own type.
PlaneReader = Callable[[slice, slice], Any]

#: Another fusion over a window: its fused image (h, w, C) and focus map (h, w) in slices.
OtherReader = Callable[[slice, slice], tuple[np.ndarray, np.ndarray]]


def _bbox(where: np.ndarray, rows: slice, cols: slice) -> tuple[slice, slice]:
    """Absolute rows and columns of the bounding box of ``where`` (a window at rows, cols)."""
    ys = np.flatnonzero(where.any(axis=1))
    xs = np.flatnonzero(where.any(axis=0))
    return (
        slice(rows.start + int(ys[0]), rows.start + int(ys[-1]) + 1),
        slice(cols.start + int(xs[0]), cols.start + int(xs[-1]) + 1),
    )


def relative(window: tuple[slice, slice], origin: tuple[slice, slice]) -> tuple[slice, slice]:
    """``window`` in the coordinates of the larger window ``origin``."""
    return tuple(  # type: ignore[return-value]
        slice(w.start - o.start, w.stop - o.start) for w, o in zip(window, origin, strict=True)
    )


@dataclass
class Retoucher:
    """Applies a mask to windows of one focus stack's fusion (one time point, one channel
    group): ``planes`` reads the stack's planes (aligned, when the fusion aligned them),
    ``others`` gives the other fusions by label, ``fusion`` this fusion's own fused image
    (for brightness matching), ``dtype`` is the fused image's type."""

    mask: RetouchMask
    n_planes: int
    shape_yx: tuple[int, int]
    dtype: np.dtype
    planes: PlaneReader
    others: Mapping[int, OtherReader]
    t: int | None = None
    fusion: Any = None  # the fused image (h, w, C) of any window: brightness matching needs it

    @property
    def reach(self) -> int:
        """How far a label changes the result around it: the brightness matching's reach."""
        return MATCH_RADIUS if self.mask.match_brightness else 0

    def window(
        self, rows: slice, cols: slice, fused: np.ndarray, focus: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Retouch the window at ``rows``, ``cols`` of a fusion whose fused image there is
        ``fused`` (h, w, C) and focus map ``focus`` (h, w).

        Returns the fused image (in :attr:`dtype`) and focus map with the labelled pixels
        replaced (focus values in slices there, untouched elsewhere) and the mask of the
        replaced pixels; None when no label falls in the window.
        """
        labels = self.mask.labels_at(self.t)
        lab = np.asarray(labels[rows, cols])
        touched = lab > 0
        if not touched.any():
            return None
        out = np.array(to_dtype(fused, self.dtype), copy=True)
        focus = np.array(focus, dtype=np.float32, copy=True)
        planes = touched & (lab <= self.n_planes)
        if planes.any():
            where = _bbox(planes, rows, cols)
            inner = relative(where, (rows, cols))
            chosen = planes[inner]
            values = self._from_planes(where, lab[inner], labels)
            out[inner][chosen] = values[chosen]
            focus[inner][chosen] = (lab[inner][chosen] - 1).astype(np.float32)
        for label, other in self.others.items():
            chosen = lab == label
            if not chosen.any():
                continue
            where = _bbox(chosen, rows, cols)
            inner = relative(where, (rows, cols))
            other_fused, other_focus = other(*where)
            chosen = chosen[inner]
            out[inner][chosen] = to_dtype(other_fused, self.dtype)[chosen]
            focus[inner][chosen] = np.asarray(other_focus, dtype=np.float32)[chosen]
        return out, focus, touched

    def _from_planes(self, where: tuple[slice, slice], lab: np.ndarray, labels: Any) -> np.ndarray:
        """(h, w, C) values of the planes ``lab`` names (in :attr:`dtype`; 0 elsewhere)."""
        index = np.clip(lab.astype(np.intp) - 1, 0, self.n_planes - 1)
        if not self.mask.match_brightness:
            raw = read_now(self.planes(*where))
            values = np.take_along_axis(raw, index[None, ..., None], 0)[0]
            return to_dtype(values, self.dtype)
        blocks = anchor_blocks(where, self.shape_yx)
        outer = (
            slice(
                blocks[0].start * MATCH_BLOCK, min(blocks[0].stop * MATCH_BLOCK, self.shape_yx[0])
            ),
            slice(
                blocks[1].start * MATCH_BLOCK, min(blocks[1].stop * MATCH_BLOCK, self.shape_yx[1])
            ),
        )
        raw = read_now(self.planes(*outer))
        around = np.asarray(labels[outer]) == 0
        assert self.fusion is not None, "brightness matching needs the fusion's own pixels"
        fused = to_dtype(self.fusion(*outer), self.dtype).astype(np.float32)
        inner = relative(where, outer)
        values = np.take_along_axis(raw[(slice(None), *inner)], index[None, ..., None], 0)[0]
        values = values.astype(np.float32)
        weight = np.where(around, np.float32(1), np.float32(PAINTED_WEIGHT))[..., None]
        reference = local_means(fused * weight)
        for k in np.unique(index[(lab >= 1) & (lab <= self.n_planes)]):
            plane = local_means(raw[k].astype(np.float32) * weight)
            usable = (reference > 0) & (plane > 0)
            gains = np.where(usable, reference / np.where(usable, plane, 1), np.float32(1))
            gain = interpolated(gains.astype(np.float32), blocks, where, self.shape_yx)
            chosen = index == k
            values[chosen] *= gain[chosen]
        return to_dtype(values, self.dtype)


def anchor_blocks(where: tuple[slice, slice], shape_yx: tuple[int, int]) -> tuple[slice, slice]:
    """The blocks (of :data:`MATCH_BLOCK` px, counted from the image's corner) whose pixels
    the matched brightness over ``where`` depends on: the blocks whose centres interpolate
    it, and the Gaussian's reach around them."""
    spans = []
    for span, size in zip(where, shape_yx, strict=True):
        n_blocks = -(-size // MATCH_BLOCK)
        first = max(span.start // MATCH_BLOCK - 1 - _REACH_BLOCKS, 0)
        last = min((span.stop - 1) // MATCH_BLOCK + 2 + _REACH_BLOCKS, n_blocks)
        spans.append(slice(first, last))
    return spans[0], spans[1]


def local_means(values: np.ndarray) -> np.ndarray:
    """Gaussian local sums (σ = :data:`MATCH_SIGMA` px) of (h, w, C) ``values`` whose window
    starts on a block corner, one per block: each block summed in a fixed order (so a block
    sums alike in any window), then smoothed at the blocks' scale."""
    from scipy import ndimage

    height, width = values.shape[:2]
    b = MATCH_BLOCK
    padded = np.zeros((-(-height // b) * b, -(-width // b) * b, values.shape[2]), np.float32)
    padded[:height, :width] = values
    sums = np.zeros((padded.shape[0] // b, padded.shape[1] // b, values.shape[2]), np.float32)
    for dy in range(b):
        for dx in range(b):
            sums += padded[dy::b, dx::b]
    sigma = MATCH_SIGMA / b
    return ndimage.gaussian_filter(
        sums, (sigma, sigma, 0.0), mode="nearest", truncate=_REACH_BLOCKS / sigma
    )


def interpolated(
    gains: np.ndarray,
    blocks: tuple[slice, slice],
    where: tuple[slice, slice],
    shape_yx: tuple[int, int],
) -> np.ndarray:
    """(h, w, C) values over ``where`` interpolated linearly between the block centres of
    ``gains`` (one per block of ``blocks``; beyond the outer centres, the nearest)."""
    weights = []
    for axis, (span, block_span, size) in enumerate(zip(where, blocks, shape_yx, strict=True)):
        n_blocks = -(-size // MATCH_BLOCK)
        at = (np.arange(span.start, span.stop) - (MATCH_BLOCK - 1) / 2) / MATCH_BLOCK
        low = np.floor(at).astype(np.intp)
        frac = (at - low).astype(np.float32)
        first = np.clip(low, 0, n_blocks - 1) - block_span.start
        second = np.clip(low + 1, 0, n_blocks - 1) - block_span.start
        shape = [1, 1, 1]
        shape[axis] = -1
        weights.append((first, second, frac.reshape(shape)))
    (y0, y1, fy), (x0, x1, fx) = weights
    top = gains[y0][:, x0] * (1 - fx) + gains[y0][:, x1] * fx
    bottom = gains[y1][:, x0] * (1 - fx) + gains[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def composed(
    result: tuple[np.ndarray, np.ndarray, np.ndarray], original_focus: np.ndarray, scale: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The fused image and a focus map in the result's units from :meth:`Retoucher.window`'s
    answer: the replaced focus values (slices) scaled by ``scale`` (µm per slice, or None) as
    a fusion's writer scales its own, the others as they were."""
    fused, focus, touched = result
    if scale is not None:
        focus = focus * np.float32(scale)
    return fused, np.where(touched, focus, original_focus).astype(np.float32)


def aligned_tile(rows: slice, cols: slice, shape_yx: tuple[int, int], halo: int, align: int) -> Any:
    """The tile a method fuses a window with exactly as on the whole image: its core grown to
    the method's alignment, read with its halo (as :func:`~napari_pdmfuse.tiling.tile_grid`
    cuts them)."""
    from .tiling import Tile

    halo = -(-halo // align) * align
    bounds = []
    for span, size in zip((rows, cols), shape_yx, strict=True):
        start = span.start // align * align
        stop = min(-(-span.stop // align) * align, size)
        bounds.append((start, stop, max(start - halo, 0), min(stop + halo, size)))
    (y0, y1, ry0, ry1), (x0, x1, rx0, rx1) = bounds
    return Tile(
        read=(slice(ry0, ry1), slice(rx0, rx1)),
        write=(slice(y0, y1), slice(x0, x1)),
        crop=(slice(y0 - ry0, y1 - ry0), slice(x0 - rx0, x1 - rx0)),
    )


@dataclass
class OtherWindow:
    """Another method's fusion of a window, computed on the spot from the stack (the command
    line's way; the widget reads a fusion it has made whole instead)."""

    fuser: Any  # a TileFuser of the other method over the same stack and normalisation

    def __call__(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        method = self.fuser.method
        tile = aligned_tile(rows, cols, self.fuser.shape_yx, method.halo, method.align)
        result = self.fuser(tile)
        inner = relative((rows, cols), tile.write)
        return result.fused[inner], result.focus[inner]

    def fused(self, rows: slice, cols: slice) -> np.ndarray:
        """The fused image alone (for brightness matching)."""
        return self(rows, cols)[0]
