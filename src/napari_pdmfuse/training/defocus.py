"""Focus stacks with known truth under real optics, composed from real defocus series.

Each series is one flat field imaged at known focus offsets, so its in-focus image is the truth
and a stack of any depth layout can be composed from the real images: plane ``j`` at a pixel of
depth ``d`` (in planes) takes the image at offset ``(j - d) * step_um``, interpolated linearly
in offset between the two nearest real offsets, and the image at the nearest end beyond the
series' range. Unlike :mod:`.rendering`, nothing here is a model of the optics: the blur, halos,
colour fringes and noise are the microscope's own.

Registration: subpixel phase correlation (``skimage.registration``) of each image against the
in-focus one, over the 40 % most textured patches and fitted with a shift and a magnification,
finds both series registered as acquired: shifts ≤ 0.26 px and magnification changes ≤ 3e-4
(≤ 0.3 px at the corners of the full wafer field, ≤ 0.06 px across a 384 px crop); the
farthest wafer offsets (beyond ±17 µm) are too blurred to measure better than ±1.5 px. Resampling
would blur more than it corrects, so the images are used as read (``tests/test_defocus.py``
checks that they stay registered).

The series live in ``../shared/data`` (``$PDMFUSE_DATA`` elsewhere); their licences ask for the
credit lines of that folder's README, and they are never shipped in the package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import tifffile
from scipy import ndimage

from .rendering import RenderedStack, depth_map

SERIES = ("wafer-defocus-reflected", "mitochondria-defocus-fluorescence")

#: The kinds of depth layout :func:`random_composite` draws (see ``rendering.depth_map``).
COMPOSITE_KINDS = ("steps", "terraces", "tilted", "dome", "mixed")
PLANE_COUNTS = (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class _Storage:
    """How a series is stored and split: its file pattern, the offset (µm) of each file, the
    pixel size, a typical offset spacing near focus, and the tuning and reporting parts."""

    pattern: str
    offset: Callable[[str], float]  # the focus offset (µm) in a file's name
    pixel_um: float | None
    spacing_um: float
    parts: dict[str, tuple[slice, slice]]
    relief: bool = False  # whether the specimen's own relief is measured (not flat at this scale)


_STORAGE = {
    # Reflected light, RGB uint8, 1200 × 1920. Offsets are irregular; "0" is the authors'
    # in-focus reference (+0.79 is as sharp). The nearest real offsets either side of focus are
    # −5.34 and +6.52 µm: their mean, 5.9 µm, is the spacing a stack's step is measured in.
    # Tuning: the bottom band (the interdigitated comb and the pads' lower edges); reporting:
    # the top 800 rows (the "3", the pads' upper edges, the left pads), 32 rows apart.
    "wafer-defocus-reflected": _Storage(
        pattern="*.tiff",
        offset=lambda name: float(re.search(r"_(-?[\d.]+)\.tiff$", name).group(1)),
        pixel_um=549.2410888671875 / 1920,
        spacing_um=5.9,
        parts={
            "tune": (slice(832, 1200), slice(0, 1920)),
            "report": (slice(0, 800), slice(0, 1920)),
        },
    ),
    # Fluorescence, uint16, 800 × 512, two cells: the upper one for tuning, the lower (larger)
    # one for reporting. Offsets (order − 51) × 0.05 µm, every third plane: 0.15 µm apart.
    # The cells are not flat at that scale: per pixel, the sharpest image ranges over about
    # −0.4 … +0.45 µm (the tuning cell's median −0.13 µm, the reporting cell's +0.10 µm), so the
    # 0 µm image (the sharpest overall) is not sharp everywhere, and a composed stack's focus is
    # its layout's depth plus that relief (see :func:`measure_relief`).
    "mitochondria-defocus-fluorescence": _Storage(
        pattern="*.tif",
        offset=lambda name: (int(re.search(r"Abs(\d+)\.tif$", name).group(1)) - 51) * 0.05,
        pixel_um=None,  # not stated upstream
        spacing_um=0.15,
        parts={"tune": (slice(0, 384), slice(0, 512)), "report": (slice(416, 800), slice(0, 512))},
        relief=True,
    ),
}


@dataclass
class DefocusSeries:
    name: str
    images: np.ndarray  # (K, H, W[, 3]) float32 in data units, registered, by offset
    offsets_um: np.ndarray  # (K,) float64, sorted; 0 is in focus
    focus_index: int  # the in-focus image: the truth
    dtype: np.dtype  # what the camera wrote; composed stacks are quantised to it
    pixel_um: float | None
    spacing_um: float  # typical spacing of the real offsets near focus
    relief_um: np.ndarray | None = None  # (H, W) offset at which each pixel is sharpest

    @property
    def focus(self) -> np.ndarray:
        return self.images[self.focus_index]


def data_root() -> Path:
    """``$PDMFUSE_DATA``, else the ``shared/data`` folder beside the repository."""
    if env := os.environ.get("PDMFUSE_DATA"):
        return Path(env)
    return Path(__file__).resolve().parents[3].parent / "shared" / "data"


@cache
def load_series(name: str, root: Path | None = None) -> DefocusSeries:
    """Read one defocus series (one of :data:`SERIES`), sorted by focus offset."""
    if name not in _STORAGE:
        raise ValueError(f"unknown defocus series {name!r}; choose from {', '.join(SERIES)}")
    layout = _STORAGE[name]
    folder = (root or data_root()) / name
    files = sorted(folder.glob(layout.pattern), key=lambda p: layout.offset(p.name))
    if not files:
        raise FileNotFoundError(f"no defocus series in {folder}; set $PDMFUSE_DATA")
    offsets = np.array([layout.offset(p.name) for p in files])
    raw = np.stack([tifffile.imread(p) for p in files])
    series = DefocusSeries(
        name=name,
        images=raw.astype(np.float32),
        offsets_um=offsets,
        focus_index=int(np.flatnonzero(offsets == 0)[0]),
        dtype=raw.dtype,
        pixel_um=layout.pixel_um,
        spacing_um=layout.spacing_um,
    )
    if layout.relief:
        series.relief_um = measure_relief(series)
    return series


def measure_relief(series: DefocusSeries) -> np.ndarray:
    """The offset (µm) at which each pixel is sharpest: the specimen's own relief.

    A flat specimen is sharpest everywhere in its in-focus image; a cell is not, and where a
    pixel is sharpest at offset δ, a stack composed with depth d there is sharpest in plane
    d + δ / step, which is the focus map's truth. Sharpness is the local energy of a band-pass
    (difference of Gaussians, σ 1 and 2 px, energy averaged over σ 4 px), its peak over the
    offsets refined by a parabola through its neighbours; where the in-focus image has no
    detail the relief is filled in from the detail around (weighted by sharpness, σ 4 px),
    since only textured pixels are scored.
    """
    grey = series.images.mean(-1) if series.images.ndim == 4 else series.images
    energy = np.stack(
        [
            ndimage.gaussian_filter(
                (ndimage.gaussian_filter(im, 1.0) - ndimage.gaussian_filter(im, 2.0)) ** 2, 4.0
            )
            for im in grey
        ]
    )
    best = np.clip(np.argmax(energy, 0), 1, len(energy) - 2)
    yy, xx = np.indices(best.shape)
    before, peak, after = (energy[best + k, yy, xx] for k in (-1, 0, 1))
    curve = before - 2 * peak + after
    vertex = np.where(curve < 0, 0.5 * (before - after) / np.where(curve < 0, curve, -1.0), 0.0)
    index = best + np.clip(vertex, -0.5, 0.5)
    offset = np.interp(index, np.arange(len(series.offsets_um)), series.offsets_um)
    weight = textured(series, series.focus) * peak
    spread = ndimage.gaussian_filter(weight, 4.0)
    filled = ndimage.gaussian_filter(weight * offset, 4.0) / np.maximum(spread, 1e-12)
    return np.where(spread > 1e-12, filled, 0.0).astype(np.float32)


def region(series: DefocusSeries, part: str) -> tuple[slice, slice]:
    """The rows and columns of ``part`` ("tune" or "report"): fixed and disjoint, so what a
    network is tuned on is never what it is reported on."""
    parts = _STORAGE[series.name].parts
    if part not in parts:
        raise ValueError(f"unknown part {part!r}; choose 'tune' or 'report'")
    return parts[part]


def compose(
    series: DefocusSeries,
    depth: np.ndarray,
    step_um: float,
    part: str,
    origin: tuple[int, int] = (0, 0),
    rng: np.random.Generator | None = None,
    n_planes: int | None = None,
) -> RenderedStack:
    """A stack of the crop at ``origin`` (within ``part``) whose pixels lie at ``depth``
    (h, w, in planes, 0 = first plane), planes ``step_um`` apart.

    Plane ``j`` at a pixel of depth ``d`` is the real image at offset ``(j - d) * step_um``,
    linear in offset between the nearest real offsets (the end image beyond the series), and
    quantised to the series' dtype; so a pixel whose depth is a whole plane ``j`` is exactly the
    in-focus image in plane ``j``. ``n_planes`` defaults to the planes ``depth`` reaches.
    ``rng``: when given, the crop is flipped at random (up-down, left-right) first.

    The returned depth, the focus map's truth, is ``depth`` plus the specimen's relief in
    planes where the series measures one (:func:`measure_relief`), within the planes (a pixel
    sharpest beyond the last plane is sharpest in it).
    """
    h, w = depth.shape
    rows, cols = region(series, part)
    y0, x0 = rows.start + origin[0], cols.start + origin[1]
    if origin[0] < 0 or origin[1] < 0 or y0 + h > rows.stop or x0 + w > cols.stop:
        raise ValueError(f"a {h} × {w} crop at {origin} does not fit in the {part!r} part")
    crop = series.images[:, y0 : y0 + h, x0 : x0 + w]
    relief = np.zeros((h, w), np.float32)
    if series.relief_um is not None:
        relief = series.relief_um[y0 : y0 + h, x0 : x0 + w]
    if rng is not None:
        flips = [axis for axis, flip in ((1, rng.random() < 0.5), (2, rng.random() < 0.5)) if flip]
        crop = np.flip(crop, flips) if flips else crop
        relief = np.flip(relief, [axis - 1 for axis in flips]) if flips else relief
    n = int(np.ceil(depth.max())) + 1 if n_planes is None else n_planes
    index = np.arange(len(series.offsets_um), dtype=np.float64)
    info = np.iinfo(series.dtype)
    yy, xx = np.indices((h, w))
    planes = []
    for j in range(n):
        where = np.interp((j - depth.astype(np.float64)) * step_um, series.offsets_um, index)
        lo = np.minimum(where.astype(int), len(index) - 2)
        frac = (where - lo).astype(np.float32)
        frac = frac[..., None] if crop.ndim == 4 else frac
        plane = (1 - frac) * crop[lo, yy, xx] + frac * crop[lo + 1, yy, xx]
        planes.append(np.clip(np.rint(plane), info.min, info.max).astype(series.dtype))
    truth = np.ascontiguousarray(crop[series.focus_index])
    return RenderedStack(
        stack=np.stack(planes),
        truth=truth,
        depth=np.clip(depth + relief / np.float32(step_um), 0, n - 1).astype(np.float32),
        textured=textured(series, truth),
    )


def textured(series: DefocusSeries, image: np.ndarray) -> np.ndarray:
    """Where ``image`` has detail to judge focus by: its gradient (σ = 1 px) reaches 4 % of the
    in-focus image's range within 2 px, as ``rendering.render_stack`` marks it."""
    grey = image.mean(-1) if image.ndim == 3 else image
    detail = ndimage.gaussian_gradient_magnitude(grey, 1.0) / _value_range(series)
    return ndimage.maximum_filter(detail, 5) > 0.04


_RANGES: dict[str, float] = {}


def _value_range(series: DefocusSeries) -> float:
    """The in-focus image's robust range (0.1 to 99.9 percentile), in data units."""
    if series.name not in _RANGES:
        low, high = np.percentile(series.focus, (0.1, 99.9))
        _RANGES[series.name] = float(max(high - low, 1e-6))
    return _RANGES[series.name]


class Layout(NamedTuple):
    """Where and how a composed stack is cut from a series (see :func:`random_layout`)."""

    depth: np.ndarray  # (h, w) float32, planes
    step_um: float
    origin: tuple[int, int]  # within the part
    n_planes: int


def random_composite(
    rng: np.random.Generator,
    series: DefocusSeries,
    part: str,
    size: int | tuple[int, int],
    n_planes: int | None = None,
    kinds: tuple[str, ...] = COMPOSITE_KINDS,
) -> RenderedStack:
    """A random stack from ``part`` (see :func:`random_layout`), flipped at random."""
    layout = random_layout(rng, series, part, size, n_planes, kinds)
    depth, step, origin, n = layout
    return compose(series, depth, step, part, origin, rng=rng, n_planes=n)


def random_layout(
    rng: np.random.Generator,
    series: DefocusSeries,
    part: str,
    size: int | tuple[int, int],
    n_planes: int | None = None,
    kinds: tuple[str, ...] = COMPOSITE_KINDS,
) -> Layout:
    """Steps, terraces, tilt, dome or mixed depth (one of ``kinds``) over 5–9 planes (or
    ``n_planes``), 1–2 spacings of the real offsets apart, on a random crop of ``part`` with
    content (the most textured of a few tries).

    The step is capped so that the stack spans no more than the series' offsets, and the depth
    layout is moved within the planes so that the fewest planes need offsets beyond the real
    ones (the mitochondria series reaches 0.9 µm below focus but only 0.6 µm above)."""
    h, w = (size, size) if isinstance(size, int) else size
    n = int(n_planes or rng.choice(PLANE_COUNTS))
    low, high = series.offsets_um[0], series.offsets_um[-1]
    step = float(min(series.spacing_um * rng.uniform(1, 2), (high - low) / (n - 1)))
    depth = depth_map(rng, (h, w), n, kinds)
    # Plane j at depth d needs offsets from -d·step to (n-1-d)·step: centre the layout in the
    # depths that keep both within [low, high], as far as the planes allow.
    centre = ((n - 1) - high / step - low / step) / 2
    span = (depth.min(), depth.max())
    shift = np.clip(centre - (span[0] + span[1]) / 2, -span[0], (n - 1) - span[1])
    whole = np.allclose(depth, np.round(depth))  # terraces stay on whole planes
    depth = depth + np.float32(np.round(shift) if whole else shift)
    return Layout(depth, step, _origin(rng, series, part, (h, w)), n)


def _origin(
    rng: np.random.Generator, series: DefocusSeries, part: str, shape: tuple[int, int]
) -> tuple[int, int]:
    """The most textured of 8 random crops of ``part`` (the mitochondria are sparse)."""
    rows, cols = region(series, part)
    room = (rows.stop - rows.start - shape[0], cols.stop - cols.start - shape[1])
    if min(room) < 0:
        raise ValueError(f"a {shape[0]} × {shape[1]} crop does not fit in the {part!r} part")
    detail = _textured_part(series.name, part)
    window = ndimage.uniform_filter(detail.astype(np.float32), shape, mode="constant")
    ys = rng.integers(0, room[0] + 1, 8)
    xs = rng.integers(0, room[1] + 1, 8)
    best = int(np.argmax(window[ys + shape[0] // 2, xs + shape[1] // 2]))
    return int(ys[best]), int(xs[best])


@cache
def _textured_part(name: str, part: str) -> np.ndarray:
    series = load_series(name)
    return textured(series, series.focus[region(series, part)])
