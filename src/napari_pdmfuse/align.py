"""Slice alignment: undo the drift and focus breathing between the planes of a focal sweep.

On a real microscope the planes of a z-stack rarely line up: the stage drifts sideways while
it steps in z, and the magnification changes slightly with focus ("focus breathing", up to a
few per cent). A fusion that picks pixels from misaligned planes doubles edges, so the planes are
registered to one reference plane first. This is off by default: a well-behaved microscope needs
none, and resampling costs a little sharpness.

Each plane is registered to its neighbour, which shares the most detail with it in a focal
sweep (the plane two steps away may be blurred beyond recognition), and the neighbour transforms
are chained to the reference plane (the middle one by default). Every pair is registered on a
difference-of-Gaussians band-pass of the luminance — defocus changes the low frequencies, noise
the highest — in three steps: the scale to the nearest per cent, as the candidate magnification
whose windowed cross-correlation peaks highest; the shift at that scale by an up-sampled phase
correlation (:func:`skimage.registration.phase_cross_correlation`); then both refined together
by a least-squares fit (:func:`scipy.optimize.least_squares`) of the band-passed images with
cubic-spline interpolation, which brings the error to hundredths of a pixel on textured planes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import ndimage, optimize
from skimage.filters import window
from skimage.registration import phase_cross_correlation
from skimage.transform import downscale_local_mean

from .errors import InputError
from .stack import read_now, to_dtype

Model = Literal["translation", "similarity"]
MODELS: tuple[str, ...] = ("translation", "similarity")

#: Band-pass of the images registered: noise above, defocus-dependent background below.
BAND = (1.0, 8.0)

#: Furthest (px) the least-squares fit may move the phase correlation's shift.
MAX_REFINE = 3.0

#: Most points the least-squares fit samples (a regular grid), and most pixels per side the
#: coarse scale search works on: enough for the accuracy, bounded time on large planes.
FIT_POINTS = 40_000
SEARCH_SIDE = 512

#: Margin (px) left out of the least-squares fit, where the band-pass sees the image border.
EDGE = 12

#: Largest magnification change between neighbouring planes searched for (focus breathing).
MAX_SCALE_STEP = 0.1

#: Spacing of the coarse search over magnifications; the least-squares fit does the rest.
SCALE_GRID = 0.01


@dataclass(frozen=True)
class Transform:
    """Where a plane sits relative to the reference plane.

    A feature at position ``p`` (y, x) of the reference plane appears in this plane at
    ``centre + scale * (p - centre) + (dy, dx)``, ``centre`` being the middle of the image: the
    plane is shifted by (dy, dx) px and magnified by ``scale`` about the image centre.
    ``rotation`` is kept for file formats and always 0: a focal sweep does not rotate.
    """

    dy: float = 0.0
    dx: float = 0.0
    scale: float = 1.0
    rotation: float = 0.0

    def then(self, other: Transform) -> Transform:
        """This transform followed by ``other`` (both about the same centre)."""
        return Transform(
            dy=other.scale * self.dy + other.dy,
            dx=other.scale * self.dx + other.dx,
            scale=other.scale * self.scale,
        )

    def inverse(self) -> Transform:
        return Transform(dy=-self.dy / self.scale, dx=-self.dx / self.scale, scale=1 / self.scale)

    def map(self, points: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """Reference coordinates (..., 2) → this plane's coordinates."""
        return centre + self.scale * (points - centre) + np.array([self.dy, self.dx])

    def recentred(self, old: np.ndarray, new: np.ndarray) -> Transform:
        """The same motion written about centre ``new`` instead of ``old`` (one frame for both).

        ``old + s·(p − old) + d = new + s·(p − new) + d′`` for every p gives
        ``d′ = d + (1 − s)·(old − new)``: a magnification about another point adds a shift.
        """
        shift = np.array([self.dy, self.dx]) + (1 - self.scale) * (
            np.asarray(old, np.float64) - np.asarray(new, np.float64)
        )
        return Transform(dy=float(shift[0]), dx=float(shift[1]), scale=self.scale)


def check_model(model: str) -> Model:
    if model not in MODELS:
        raise InputError(f"Unknown alignment model {model!r}; choose one of {', '.join(MODELS)}.")
    return model  # type: ignore[return-value]


def band_pass(plane: np.ndarray, band: tuple[float, float] = BAND) -> np.ndarray:
    """Difference of Gaussians at unit standard deviation, so planes weigh alike; 0 if flat."""
    plane = np.asarray(plane, dtype=np.float64)
    dog = ndimage.gaussian_filter(plane, band[0]) - ndimage.gaussian_filter(plane, band[1])
    spread = float(dog.std())
    if spread <= 1e-9 * max(float(np.abs(plane).max()), 1.0):  # rounding noise, no texture
        return np.zeros_like(dog)
    return dog / spread


def image_centre(shape: tuple[int, ...]) -> np.ndarray:
    """The (y, x) centre of an image of this shape (Y, X, ...), which transforms are about."""
    return (np.array(shape[:2], dtype=np.float64) - 1) / 2


def _correlation_peak(fixed: np.ndarray, fixed_spectrum: np.ndarray, moving: np.ndarray) -> float:
    """Highest cross-correlation over all (circular) shifts, normalised: 1 when images match."""
    cross = np.fft.irfft2(fixed_spectrum * np.fft.rfft2(moving).conj(), s=moving.shape)
    energy = np.sqrt(np.sum(fixed * fixed) * np.sum(moving * moving))
    return float(cross.max() / max(energy, 1e-12))


def _coarse_scale(fixed: np.ndarray, moving: np.ndarray) -> float:
    """The magnification of ``moving`` against ``fixed``, to the nearest per cent.

    Each candidate magnification is undone and the one whose normalised cross-correlation peaks
    highest wins: the peak stays sharp under any shift, but smears as soon as scales differ. (A
    log-polar correlation of the Fourier magnitudes is the textbook route, but the featureless,
    power-law spectra of microscopy images leave it blind to changes of a few per cent.)
    """
    factor = -(-max(fixed.shape) // SEARCH_SIDE)
    if factor > 1:  # a per-cent search needs no more than a few hundred pixels a side
        fixed, moving = (downscale_local_mean(img, (factor, factor)) for img in (fixed, moving))
    hann = window("hann", fixed.shape)
    fixed = fixed * hann
    spectrum = np.fft.rfft2(fixed)
    steps = np.arange(-MAX_SCALE_STEP, MAX_SCALE_STEP + SCALE_GRID / 2, SCALE_GRID)
    peaks = [_correlation_peak(fixed, spectrum, _scaled(moving, 1 + s) * hann) for s in steps]
    return float(1 + steps[int(np.argmax(peaks))])


def _scaled(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` magnified by ``scale`` about its centre (values at q = c + scale·(p − c))."""
    centre = image_centre(image.shape)
    return ndimage.affine_transform(
        image, np.full(2, scale), offset=centre - scale * centre, order=1, mode="nearest"
    )


def _refine(fixed: np.ndarray, moving: np.ndarray, start: Transform, model: Model) -> Transform:
    """Least-squares fit of ``moving`` at the transformed points to ``fixed``, from ``start``.

    A gain absorbs the change in contrast between planes focused at different depths.
    """
    height, width = fixed.shape
    centre = image_centre(fixed.shape)
    coeffs = ndimage.spline_filter(moving, order=3)
    stride = max(1, int(np.ceil(np.sqrt((height - 2 * EDGE) * (width - 2 * EDGE) / FIT_POINTS))))
    yy, xx = np.mgrid[EDGE : height - EDGE : stride, EDGE : width - EDGE : stride]
    points = np.stack([yy.ravel(), xx.ravel()], axis=-1).astype(np.float64)
    landed = start.map(points, centre)
    limit = np.array([height - 1 - EDGE, width - 1 - EDGE])
    inside = ((landed >= EDGE) & (landed <= limit)).all(axis=1)
    if inside.sum() < 1000:
        return start
    points = points[inside]
    target = fixed[points[:, 0].astype(int), points[:, 1].astype(int)]
    similarity = model == "similarity"

    def unpack(params: np.ndarray) -> Transform:
        scale = float(np.exp(params[2])) if similarity else 1.0
        return Transform(dy=float(params[0]), dx=float(params[1]), scale=scale)

    def residual(params: np.ndarray) -> np.ndarray:
        q = unpack(params).map(points, centre)
        values = ndimage.map_coordinates(coeffs, q.T, order=3, prefilter=False, mode="nearest")
        return params[-1] * values - target

    x0 = [start.dy, start.dx, *([np.log(start.scale)] if similarity else []), 1.0]
    fit = optimize.least_squares(residual, np.array(x0), x_scale="jac", method="lm")
    refined = unpack(fit.x)
    moved = max(abs(refined.dy - start.dy), abs(refined.dx - start.dx))
    if not fit.success or moved > MAX_REFINE or abs(refined.scale - start.scale) > 2 * SCALE_GRID:
        return start  # the fit wandered off (no texture to hold it): keep the correlation's answer
    return refined


def register_pair(fixed: np.ndarray, moving: np.ndarray, model: str = "translation") -> Transform:
    """The transform taking ``fixed``'s coordinates to where the same detail lies in ``moving``.

    Both are (Y, X) luminance planes; see :class:`Transform` for the convention.
    """
    model = check_model(model)
    a, b = band_pass(fixed), band_pass(moving)
    if not (a.any() and b.any()):
        return Transform()  # a plane without texture: nothing to register, leave it in place
    scale = 1.0
    if model == "similarity":
        scale = _coarse_scale(a, b)
    # In float32: the correlation only has to find the shift to 1/20 px for the fit to refine,
    # and its spectra are the largest arrays of an alignment (half the memory of float64).
    hann = window("hann", a.shape).astype(np.float32)
    shift, _, _ = phase_cross_correlation(
        a.astype(np.float32) * hann,
        _scaled(b.astype(np.float32), scale) * hann,
        upsample_factor=20,
        normalization=None,
    )
    # The magnified copy of ``b`` shows ``a`` shifted by (dy, dx) / scale.
    start = Transform(dy=-float(shift[0]) * scale, dx=-float(shift[1]) * scale, scale=scale)
    return _refine(a, b, start, model)


def estimate_transforms(
    stack_lum: np.ndarray, model: str = "translation", reference: int | None = None
) -> list[Transform]:
    """One :class:`Transform` per plane of a (Z, Y, X) luminance stack, relative to ``reference``.

    ``reference`` defaults to the middle plane, which keeps the chains of neighbour
    registrations (and their errors) shortest; its own transform is the identity.
    """
    model = check_model(model)
    lum = np.asarray(stack_lum)
    if lum.ndim != 3 or lum.shape[0] < 1:
        raise InputError(
            f"Alignment needs a (Z, Y, X) luminance stack, not an array of shape {lum.shape}."
        )
    ref = _reference(lum.shape[0], reference)
    _check_sides(lum.shape[1:])
    return _chain(lambda k: lum[k], lum.shape[0], ref, model)


#: Largest side (px) of the central view of the planes that transforms are estimated on, which
#: bounds the time and memory of an alignment (a few hundred MB, whatever the image size). The
#: shifts come out as well as from whole planes of any size; the magnification grows more
#: precise with the view (an error of 3e-5 at 2048 px against 2e-4 at 1024 px on a rendered
#: fluorescence stack), which matters far from the centre of a large image.
VIEW_SIDE = 2048


def central_view(shape_yx: tuple[int, int], max_side: int = VIEW_SIDE) -> tuple[slice, slice]:
    """The (rows, cols) of the middle ``max_side`` × ``max_side`` px of a plane (or all of it)."""
    return tuple(  # type: ignore[return-value]
        slice((n - min(n, max_side)) // 2, (n - min(n, max_side)) // 2 + min(n, max_side))
        for n in shape_yx
    )


def estimate_from_centre(
    data: Any,
    luminance: Callable[[np.ndarray], np.ndarray],
    model: str = "translation",
    *,
    reference: int | None = None,
    max_side: int = VIEW_SIDE,
) -> list[Transform]:
    """One :class:`Transform` per plane of a (Z, Y, X, C) stack, in the whole image's frame.

    Drift and focus breathing move the whole field alike, so they are measured on the central
    view of at most ``max_side`` px a side (:func:`central_view`): a stack of any size is
    aligned on bounded memory. The view of each plane is read alone from ``data`` (numpy or
    dask), as float32, and reduced by ``luminance`` ((1, y, x, C) → (1, y, x), e.g.
    :meth:`.Normalisation.luminance`), so that only the two planes being registered (and the
    reference) are held at once. The transforms found about the view's centre are rewritten
    about the image's centre, where :func:`apply_transforms` and the aligned reader apply them.
    """
    model = check_model(model)
    shape = tuple(int(n) for n in data.shape)
    if len(shape) != 4 or shape[0] < 1:
        raise InputError(f"Alignment needs a (Z, Y, X, C) stack, not an array of shape {shape}.")
    if max_side < 4 * EDGE:
        raise InputError(
            f"A view of {max_side} px a side is too small to align on; give at least {4 * EDGE} px."
        )
    ref = _reference(shape[0], reference)
    _check_sides(shape[1:3])
    rows, cols = central_view(shape[1:3], max_side)

    def plane(k: int) -> np.ndarray:
        part = read_now(data[k : k + 1, rows, cols])  # no dask threads for one small read
        return luminance(part.astype(np.float32, copy=False))[0]

    in_view = _chain(plane, shape[0], ref, model)
    view_centre = np.array([rows.start, cols.start]) + image_centre(
        (rows.stop - rows.start, cols.stop - cols.start)
    )
    full_centre = image_centre(shape[1:3])
    return [t.recentred(view_centre, full_centre) for t in in_view]


def _reference(n: int, reference: int | None) -> int:
    ref = n // 2 if reference is None else reference
    if not -n <= ref < n:
        raise InputError(f"Reference plane {ref} does not exist in a stack of {n} planes.")
    return ref % n


def _check_sides(shape_yx: tuple[int, ...]) -> None:
    if min(shape_yx) < 4 * EDGE:
        raise InputError(
            f"Planes of {shape_yx[0]}×{shape_yx[1]} px are too small to align; alignment "
            f"needs at least {4 * EDGE} px a side."
        )


def _chain(plane: Callable[[int], np.ndarray], n: int, ref: int, model: Model) -> list[Transform]:
    """Register each plane to its neighbour towards ``ref`` and chain the transforms to it.

    ``plane(k)`` gives plane k's (Y, X) luminance; each is asked for once, in order outwards
    from the reference, so at most three planes are held at a time.
    """
    transforms: list[Transform] = [Transform()] * n
    first = plane(ref)
    for step in (1, -1):
        previous = first
        for k in range(ref + step, n if step > 0 else -1, step):
            current = plane(k)
            transforms[k] = transforms[k - step].then(register_pair(previous, current, model))
            previous = current
    return transforms


def _resample(plane: np.ndarray, t: Transform, order: int) -> np.ndarray:
    centre = image_centre(plane.shape)
    offset = centre - t.scale * centre + np.array([t.dy, t.dx])
    return ndimage.affine_transform(
        np.asarray(plane, dtype=np.float32),
        np.full(2, t.scale),
        offset=offset,
        order=order,
        mode="nearest",
    )


def coverage(
    shape_yx: tuple[int, int],
    transforms: Sequence[Transform],
    rows: slice | None = None,
    cols: slice | None = None,
) -> np.ndarray:
    """(Y, X) bool: the reference pixels that every plane saw (no padding in any plane).

    ``rows`` and ``cols`` restrict it to a window of the image, computed alone (same values).
    A transform moves rows and columns independently, so the mask is an outer product.
    """
    centre = image_centre(shape_yx)
    spans = [
        range(*(s or slice(None)).indices(n)) for s, n in zip((rows, cols), shape_yx, strict=True)
    ]
    seen = []
    for axis, span in enumerate(spans):
        p = np.arange(span.start, span.stop, dtype=np.float64)
        ok = np.ones(p.shape, dtype=bool)
        for t in transforms:
            q = centre[axis] + t.scale * (p - centre[axis]) + (t.dy, t.dx)[axis]
            ok &= (q >= -1e-6) & (q <= shape_yx[axis] - 1 + 1e-6)
        seen.append(ok)
    return seen[0][:, None] & seen[1][None, :]


def apply_transforms(
    stack: np.ndarray, transforms: Sequence[Transform], order: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a (Z, Y, X[, C]) stack into the reference plane's frame.

    Returns the aligned stack (same shape and dtype; integers rounded and clipped) and the
    (Y, X) coverage mask. Every channel moves with its plane. Outside the coverage the edge
    pixels are repeated, which adds no false detail for the focus measures to pick.
    """
    data = np.asarray(stack)
    if data.ndim not in (3, 4) or len(transforms) != data.shape[0]:
        raise InputError(
            f"Got {len(transforms)} transforms for a stack of shape {data.shape}; give one per "
            "plane of a (Z, Y, X[, C]) stack."
        )
    if order not in (1, 3):
        raise InputError(f"Interpolation order {order} is not supported; use 1 or 3.")
    planes = data if data.ndim == 4 else data[..., None]
    out = np.empty(planes.shape, dtype=data.dtype)
    for k, t in enumerate(transforms):
        for c in range(planes.shape[-1]):
            out[k, ..., c] = to_dtype(_resample(planes[k, ..., c], t, order), data.dtype)
    aligned = out if data.ndim == 4 else out[..., 0]
    return aligned, coverage(data.shape[1:3], transforms)


def report(transforms: Sequence[Transform]) -> str:
    """A plain-text table of each plane's shift (px) and magnification, for logs."""
    lines = ["plane   dy (px)   dx (px)     scale"]
    for k, t in enumerate(transforms):
        lines.append(f"{k:5d}  {t.dy:+8.2f}  {t.dx:+8.2f}  {t.scale:8.5f}")
    return "\n".join(lines)
