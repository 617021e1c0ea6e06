"""The canonical in-memory view of a focus stack: (Z, Y, X, C), lazily indexed.

Every entry point (API, CLI, widget) funnels its input through :func:`as_stack`, so shapes,
dtypes and axis conventions are checked once, with messages a user can act on, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .sizes import check_sides

#: Rec. 709 luma weights, used to reduce RGB planes to the one channel the focus measures see.
RGB_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)

#: Largest number of voxels read to estimate the normalisation of a stack.
SAMPLE_VOXELS = 4_000_000

#: Bound on the normalised luminance (normally within [0, 1]), so that outliers millions of
#: times beyond the stack's range, or ranges wider than float32, cannot overflow a method.
LUM_LIMIT = 1e6


@dataclass(frozen=True)
class Stack:
    """A validated focus stack.

    ``data`` is a numpy or dask array shaped (Z, Y, X, C); ``layout`` remembers how the channels
    were laid out in the input so the fused image can be returned in the same layout.
    """

    data: object
    dtype: np.dtype
    layout: str  # "grey" (no channel axis), "rgb" (trailing RGB/RGBA axis) or "channels"
    z_spacing: float | None = None
    planes: object = None  # grey stacks: ``data`` before its channel axis was added

    def window(self, rows: slice, cols: slice) -> object:
        """Every plane of a window, (Z, y, x, C), as lazy as ``data``.

        A grey stack is sliced before its channel axis is added: dask narrows a read to the
        window only through plain slicing, and would otherwise decode whole chunks.
        """
        if self.planes is None:
            return self.data[:, rows, cols]  # type: ignore[index]
        return self.planes[:, rows, cols][..., None]  # type: ignore[index]

    @property
    def n_slices(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape_yx(self) -> tuple[int, int]:
        return int(self.data.shape[1]), int(self.data.shape[2])

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[3])


def is_lazy(data: object) -> bool:
    """Whether ``data`` is a dask array, read only when computed."""
    return hasattr(data, "dask")


def as_stack(
    data: object,
    *,
    z_axis: int = 0,
    channel_axis: int | None = None,
    rgb: bool | None = None,
    z_spacing: float | None = None,
) -> Stack:
    """Validate ``data`` and bring it to (Z, Y, X, C) without reading it.

    A trailing axis of length 3 or 4 on a 4-D array is taken as RGB(A) unless ``rgb`` is False;
    any other extra axis must be named with ``channel_axis``.
    """
    if isinstance(data, (list, tuple)):
        data = stack_planes(data)
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    dtype = np.dtype(data.dtype)
    if dtype.kind not in "uif":
        raise InputError(
            f"The stack's data type {dtype} cannot be fused; convert it to an integer or float "
            "image first."
        )
    if data.ndim < 3:
        raise InputError(
            f"The input is a single {data.ndim}-D image of shape {tuple(data.shape)}; "
            "a focus stack needs at least two focal planes along a Z axis."
        )
    ndim = data.ndim
    if ndim == 3 and data.shape[-1] in (3, 4) and min(data.shape[:2]) > 4 and channel_axis is None:
        raise InputError(
            f"The input of shape {tuple(data.shape)} looks like a single RGB image, not a stack; "
            "give at least two focal planes, e.g. shaped (Z, Y, X, 3)."
        )
    if not -ndim <= z_axis < ndim:
        raise InputError(
            f"z_axis={z_axis} does not exist in a {ndim}-D stack of shape {data.shape}."
        )
    z_axis %= ndim
    if rgb is None:
        rgb = channel_axis is None and ndim == 4 and data.shape[-1] in (3, 4) and z_axis != ndim - 1
    if rgb:
        channel_axis = ndim - 1
    if channel_axis is not None:
        channel_axis %= ndim
        if channel_axis == z_axis:
            raise InputError("The Z axis and the channel axis must be different axes.")
    expected = 3 + (channel_axis is not None)
    if ndim != expected:
        raise InputError(
            f"A stack of shape {tuple(data.shape)} has {ndim} axes; expected (Z, Y, X) or "
            "(Z, Y, X, RGB) — name the channel axis for multichannel data."
        )
    spatial = [a for a in range(ndim) if a not in (z_axis, channel_axis)]
    order = [z_axis, *spatial] + ([channel_axis] if channel_axis is not None else [])
    arr = data.transpose(order) if order != list(range(ndim)) else data
    planes = None
    if channel_axis is None:
        planes, arr = arr, arr[..., None]
    if 0 in arr.shape:
        raise InputError(
            f"The stack of shape {tuple(data.shape)} has an empty axis; nothing to fuse."
        )
    if arr.shape[0] < 2:
        raise InputError(
            f"The stack has only one focal plane along its Z axis (shape {tuple(data.shape)}); "
            "fusing needs at least two."
        )
    check_sides((int(arr.shape[1]), int(arr.shape[2])))
    layout = "rgb" if rgb else ("channels" if channel_axis is not None else "grey")
    return Stack(data=arr, dtype=dtype, layout=layout, z_spacing=z_spacing, planes=planes)


def stack_planes(planes: list | tuple) -> object:
    """Stack a list of 2-D planes (or RGB planes) into one Z-first array, checking they match."""
    if len(planes) < 2:
        raise InputError(
            f"Only {len(planes)} focal plane{'' if len(planes) == 1 else 's'} given; fusing "
            "needs at least two."
        )
    planes = [p if hasattr(p, "shape") and hasattr(p, "dtype") else np.asarray(p) for p in planes]
    shapes = {tuple(p.shape) for p in planes}
    counts = sorted({s[2] if len(s) > 2 else 1 for s in shapes})
    if len({s[:2] for s in shapes}) == 1 and len(counts) > 1:
        raise InputError(
            f"The planes have different numbers of channels {counts}; every focal plane must "
            "have the same channels (e.g. all grey or all RGB)."
        )
    if len(shapes) > 1:
        raise InputError(
            f"The planes have different shapes {sorted(shapes)}; every focal plane must have the "
            "same size."
        )
    dtypes = {np.dtype(p.dtype) for p in planes}
    if len(dtypes) > 1:
        raise InputError(
            f"The planes have different data types {sorted(map(str, dtypes))}; "
            "convert them to one type."
        )
    if any(is_lazy(p) for p in planes):
        import dask.array as da

        return da.stack(planes)
    return np.stack([np.asarray(p) for p in planes])


@dataclass(frozen=True)
class Normalisation:
    """Per-channel robust intensity range, so 8-bit, 16-bit and float stacks look alike."""

    low: np.ndarray  # (C,)
    high: np.ndarray  # (C,)
    luma: np.ndarray  # (C,) weights of each normalised channel in the luminance
    gains: np.ndarray | None = None  # (Z, C) brightness correction of each plane, if asked

    def corrected(self, block: np.ndarray, owned: bool) -> np.ndarray:
        """A (Z, y, x, C) float32 block with each plane's brightness corrected, if asked for;
        ``owned`` says it may be changed in place (it is not the caller's data)."""
        if self.gains is None:
            return block
        out = block if owned else block.copy()
        out *= self.gains[:, None, None, :]
        return out

    def luminance(self, block: np.ndarray) -> np.ndarray:
        """(Z, y, x, C) float32 block in data units → (Z, y, x) normalised luminance.

        Pixels that overflow float32 here, or lie beyond ±LUM_LIMIT, are computed again in
        float64 and bounded; each pixel's value depends only on itself, so tiles still stitch.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scale = self.luma / (self.high - self.low)
            if block.shape[-1] == 1:  # grey: no channel sum, fewer passes over the block
                lum = block[..., 0] - self.low[0]
                lum *= scale[0]
            else:
                lum = ((block - self.low) * scale).sum(axis=-1, dtype=np.float32)
            lum = lum.astype(np.float32, copy=False)
            # Two fast reductions rule out the rare bad pixels (NaN fails both comparisons).
            if lum.min() >= -LUM_LIMIT and lum.max() <= LUM_LIMIT:
                return lum
            bad = ~(np.abs(lum) <= LUM_LIMIT)  # NaN and infinities too
        lum[bad] = self._bounded(block[bad])
        return lum

    def _bounded(self, values: np.ndarray) -> np.ndarray:
        """(n, C) values → (n,) luminance computed in float64, clipped to ±LUM_LIMIT."""
        span = self.high.astype(np.float64) - self.low
        scale = self.luma / np.where(span > 0, span, 1.0)
        lum = ((values.astype(np.float64) - self.low) * scale).sum(axis=-1)
        return np.clip(lum, -LUM_LIMIT, LUM_LIMIT)


def sample_blocks(stack: Stack, max_voxels: int = SAMPLE_VOXELS) -> list[np.ndarray]:
    """Read a few tiles spread over the plane: enough for robust statistics, never the stack."""
    z, y, x = stack.data.shape[:3]
    if z * y * x <= max_voxels:
        return [read_now(stack.data)]
    side = 256
    n_tiles = max(1, max_voxels // (z * side * side))
    grid = int(np.ceil(np.sqrt(n_tiles)))
    ys = np.linspace(0, max(y - side, 0), grid).astype(int)
    xs = np.linspace(0, max(x - side, 0), grid).astype(int)
    windows = (stack.window(slice(y0, y0 + side), slice(x0, x0 + side)) for y0 in ys for x0 in xs)
    return [read_now(w) for w in windows]


def read_now(data: object) -> np.ndarray:
    """``data`` as an array, a lazy one read by the calling thread alone.

    dask's scheduler is passed as a function: given by name ("synchronous"), or left to its
    default, dask first looks for a distributed client, which imports distributed (a fifth of a
    second at start-up) and would send a local read to a user's cluster. No callbacks: dask's
    are global to the process, and napari's dask cache, entered while it draws a layer, would
    otherwise keep a copy of what the fusion reads meanwhile in another thread.
    """
    if is_lazy(data):
        from dask.local import get_sync

        data = data.compute(scheduler=get_sync, callbacks=())  # type: ignore[attr-defined]
    return np.asarray(data)


def normalisation(
    stack: Stack, focus_channel: int | None = None, correct_brightness: bool = False
) -> Normalisation:
    """Estimate the 0.1–99.9 percentile range of each channel from a sample of the stack.

    The luminance that decides focus combines all channels, unless ``focus_channel`` names the
    one channel to decide on (every channel still follows the same per-pixel choice).
    ``correct_brightness`` also estimates, per plane and channel, the gain that brings the
    plane's mean to the stack's (see :func:`plane_gains`).
    """
    c = stack.n_channels
    if focus_channel is not None and not 0 <= focus_channel < c:
        raise InputError(
            f"focus_channel={focus_channel} does not exist; the stack has {c} channel(s), "
            f"numbered 0 to {c - 1}."
        )
    blocks = sample_blocks(stack)
    raw = np.concatenate([b.reshape(-1, stack.n_channels) for b in blocks])
    if not np.isfinite(raw).all():
        raise non_finite()
    with np.errstate(over="ignore"):
        values = raw.astype(np.float32)
    if not np.isfinite(values).all():
        raise beyond_float32()
    low = np.percentile(values, 0.1, axis=0).astype(np.float32)
    high = np.percentile(values, 99.9, axis=0).astype(np.float32)
    with np.errstate(over="ignore"):  # a span beyond float32 stays +inf: fine, it is > 0
        span = high - low
    high = np.where(span > 0, high, low + 1).astype(np.float32)
    if focus_channel is not None:
        luma = np.eye(c, dtype=np.float32)[focus_channel]
    elif stack.layout == "rgb":
        luma = np.append(RGB_LUMA, np.zeros(c - 3, np.float32)).astype(np.float32)
    else:
        luma = np.full(c, 1.0 / c, np.float32)
    gains = plane_gains(blocks) if correct_brightness else None
    return Normalisation(low=low, high=high, luma=luma, gains=gains)


#: Largest brightness ratio between the brightest and the darkest plane that correction undoes.
MAX_GAIN = 2.0


def plane_gains(blocks: list[np.ndarray]) -> np.ndarray:
    """(Z, C) gains that give every plane the stack's mean brightness.

    Defocus spreads light but keeps its total, so the planes of a stack over one field of
    view have the same mean unless the lamp flickered or the dye bleached between them; the
    ratio of the means over the sampled tiles measures that. Flicker scales all the light, a
    brightfield background included, hence a gain rather than an offset (a large camera offset
    makes the correction fall short, never overshoot). Larger differences are not drift (a
    confocal stack through a cell is dark above and below it), and scaling such planes up would
    only amplify their noise, so they are refused. A channel whose mean is not positive (all
    zero, or background-subtracted around zero) has no brightness to even out.
    """
    signal = np.stack([b.astype(np.float64).mean(axis=(1, 2)) for b in blocks])
    means = signal.mean(axis=0)  # (Z, C), every sampled tile weighted alike
    stack_mean = means.mean(axis=0)
    blank = stack_mean <= 0  # such a channel stays as it is
    with np.errstate(divide="ignore", invalid="ignore"):
        gains = np.where(blank, 1.0, stack_mean / np.where(blank, 1.0, means))
    usable = np.isfinite(gains).all() and (gains > 0).all()
    if not usable or (gains.max(axis=0) / gains.min(axis=0)).max() > MAX_GAIN:
        raise InputError(
            f"The planes' brightness differs by more than a factor of {MAX_GAIN:g}, more than "
            "flicker or bleaching; fuse without brightness correction."
        )
    return gains.astype(np.float32)


def beyond_float32() -> InputError:
    limit = float(np.finfo(np.float32).max)
    return InputError(
        f"The stack holds values beyond ±{limit:.1e}, the float32 range pdmfuse computes in; "
        "rescale it (e.g. divide by a power of ten) before fusing."
    )


def non_finite() -> InputError:
    return InputError(
        "The stack contains NaN or infinite values; replace them (e.g. with numpy.nan_to_num) "
        "before fusing."
    )


def to_dtype(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Convert a float result back to the input dtype, saturating at the type's limits.

    Integers are rounded; values at or beyond the type's maximum become exactly that maximum
    (and likewise the minimum). Clipping in float alone is not enough: float32 cannot hold
    2**32 - 1 or 2**63 - 1, rounds them up past the range, and the cast then wraps a saturated
    pixel round to the type's minimum. Floats narrower than the result saturate at their largest
    finite value instead of overflowing to infinity. NaN, which no integer holds, becomes 0.
    """
    dtype = np.dtype(dtype)
    plane = np.asarray(plane)
    if plane.dtype == dtype and dtype.kind in "ui":  # copied from the input: already exact
        return plane
    if dtype.kind in "ui":
        return _to_integer(plane, dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):
            out = plane.astype(dtype)
        info = np.finfo(dtype)
        return np.clip(out, info.min, info.max, out=out)
    return plane.astype(dtype)


def _to_integer(plane: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and saturate to an integer type exactly, without RuntimeWarnings.

    The limits are compared in the plane's own float type: ``high`` is the type's maximum as
    that float holds it (possibly rounded up past it), so every value below ``high`` casts
    within range and every value at or above it is set to the maximum afterwards.
    """
    info = np.iinfo(dtype)
    if plane.dtype.kind != "f":
        plane = plane.astype(np.float64)  # integer or bool input: compare in a float type
    values = np.rint(plane)
    ftype = values.dtype.type
    with np.errstate(over="ignore"):
        high, low = ftype(info.max), ftype(info.min)
    with np.errstate(invalid="ignore"):
        out = np.clip(values, low, high).astype(dtype)
    out[values >= high] = info.max
    out[values <= low] = info.min
    out[np.isnan(values)] = 0
    return out
