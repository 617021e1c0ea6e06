"""Fusing hyperstacks: time-lapses and multichannel stacks in any axis order.

Real microscopy files carry more axes than one focus stack: time points, channels in ImageJ's
"TZCYX" order, or colour samples. This module names the axes once (:func:`parse_axes`), fuses
one time point at a time through the ordinary core (:func:`napari_pdmfuse.fusion.fuse_iter`), so
never more than one time point's stack is read, and puts the results back in the input's order.

How channels decide focus (``channel_mode``):

- ``"combined"`` (default): one focus map from all channels together, applied to every channel,
  so the channels stay registered — the core's own behaviour;
- ``focus_channel=k`` (with ``"combined"``): the map comes from channel k alone (e.g. a
  structural stain), and every channel still follows it;
- ``"separate"``: each channel is fused on its own, with its own focus map — right when the
  channels show different structures at different depths, at the price of registration.

Planes can first be aligned (``align="translation"`` or ``"similarity"``, see :mod:`.align`),
estimated on the luminance that decides focus and applied to every channel.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import align as alignment
from .errors import InputError
from .fusion import FusionResult, Progress, fuse_iter
from .sizes import MAP_BYTES, available_memory, gib
from .stack import as_stack, normalisation

#: The axis letters understood, as in ImageJ / OME / tifffile.
AXIS_NAMES = {
    "T": "time",
    "Z": "focus",
    "C": "channel",
    "S": "RGB samples",
    "Y": "rows",
    "X": "columns",
}
CHANNEL_MODES = ("combined", "separate")

#: Options that the axes string decides, so they cannot also be given to the core.
_AXIS_OPTIONS = ("z_axis", "channel_axis", "rgb")


@dataclass(frozen=True)
class Axes:
    """A validated axes string for an array of ``shape``."""

    axes: str
    shape: tuple[int, ...]

    def find(self, letter: str) -> int | None:
        return self.axes.index(letter) if letter in self.axes else None

    @property
    def channel_letter(self) -> str | None:
        return "C" if "C" in self.axes else ("S" if "S" in self.axes else None)

    @property
    def rgb(self) -> bool:
        return "S" in self.axes

    @property
    def n_times(self) -> int | None:
        t = self.find("T")
        return None if t is None else self.shape[t]

    @property
    def n_channels(self) -> int:
        letter = self.channel_letter
        return 1 if letter is None else self.shape[self.axes.index(letter)]

    @property
    def shape_yx(self) -> tuple[int, int]:
        return self.shape[self.axes.index("Y")], self.shape[self.axes.index("X")]

    @property
    def fused_axes(self) -> str:
        """Axes of the fused image: the input's, in the input's order, without Z."""
        return self.axes.replace("Z", "")

    def stack_order(self) -> list[int]:
        """Input axes (T excluded) in the (Z, Y, X[, C]) order the core expects."""
        letters = "ZYX" + (self.channel_letter or "")
        return [self.axes.replace("T", "").index(a) for a in letters]


def parse_axes(axes: str, shape: Sequence[int]) -> Axes:
    """Check that ``axes`` (e.g. "TZCYX") names every axis of an array of ``shape`` once."""
    if not isinstance(axes, str) or not axes:
        raise InputError("Axes must be a string with one letter per axis, such as 'TZCYX'.")
    shape = tuple(int(n) for n in shape)
    upper = axes.upper()
    for letter in upper:
        if letter not in AXIS_NAMES:
            names = ", ".join(f"{k} ({v})" for k, v in AXIS_NAMES.items())
            raise InputError(f"Unknown axis {letter!r} in axes {axes!r}; use the letters {names}.")
    for letter in upper:
        if upper.count(letter) > 1:
            raise InputError(f"Axis {letter} appears twice in axes {axes!r}; name each axis once.")
    if len(upper) != len(shape):
        raise InputError(
            f"Axes {axes!r} name {len(upper)} axes but the data has {len(shape)} (shape "
            f"{shape}); give one letter per axis."
        )
    missing = [a for a in "ZYX" if a not in upper]
    if missing:
        raise InputError(
            f"Axes {axes!r} have no {' or '.join(missing)} axis; a focus stack needs Z, Y and X."
        )
    if "C" in upper and "S" in upper:
        raise InputError(
            f"Axes {axes!r} have both channels (C) and RGB samples (S); fuse one of them at a "
            "time, e.g. by selecting a single channel."
        )
    if "S" in upper and shape[upper.index("S")] not in (3, 4):
        raise InputError(
            f"The S axis has {shape[upper.index('S')]} samples but RGB(A) has 3 or 4; call it C "
            "to fuse other channel counts."
        )
    return Axes(axes=upper, shape=shape)


@dataclass
class HyperstackResult:
    """Fused hyperstack: ``fused`` in the input's axis order without Z (``axes``, e.g. "TCYX");
    ``focus_map`` and ``confidence`` shaped ``map_axes``: (T?, Y, X), or (T?, C, Y, X) when
    each channel was fused separately. ``transforms`` (per time point, per plane) and
    ``coverage`` ((T?, Y, X), True where every plane saw the pixel) are set when aligned.
    """

    fused: np.ndarray
    focus_map: np.ndarray
    confidence: np.ndarray
    axes: str
    map_axes: str
    method: str
    focus_unit: str = "slice"
    transforms: list[list[alignment.Transform]] | None = None
    coverage: np.ndarray | None = None


def _check_options(
    ax: Axes, channel_mode: str, focus_channel: int | None, options: dict[str, Any]
) -> None:
    given = [k for k in _AXIS_OPTIONS if k in options]
    if given:
        raise InputError(
            f"The axes string already says where Z and the channels are; drop {', '.join(given)}."
        )
    if channel_mode not in CHANNEL_MODES:
        raise InputError(
            f"Unknown channel mode {channel_mode!r}; choose one of {', '.join(CHANNEL_MODES)}."
        )
    if channel_mode == "separate" and ax.channel_letter is None:
        raise InputError(
            f"Axes {ax.axes!r} have no channel axis to fuse separately; add C (or S) to the axes "
            "or use the combined mode."
        )
    if focus_channel is None:
        return
    if channel_mode == "separate":
        raise InputError(
            "A focus channel applies to the combined mode only; in the separate mode every "
            "channel decides for itself."
        )
    if ax.channel_letter is None:
        raise InputError(
            f"Axes {ax.axes!r} have no channel axis, so there is no focus channel to choose."
        )
    if not 0 <= focus_channel < ax.n_channels:
        raise InputError(
            f"Focus channel {focus_channel} does not exist; the data has channels 0 to "
            f"{ax.n_channels - 1}."
        )


def _check_result_memory(ax: Axes, dtype: np.dtype, separate: bool) -> None:
    """Refuse up front a result (all time points) larger than the free memory."""
    height, width = ax.shape_yx
    maps = ax.n_channels if separate else 1
    per_time = height * width * (ax.n_channels * np.dtype(dtype).itemsize + 2 * MAP_BYTES * maps)
    need = per_time * (ax.n_times or 1)
    free = available_memory()
    if free is not None and need > free:
        raise InputError(
            f"The fused hyperstack needs {gib(need)} of memory but only {gib(free)} is "
            "available; fuse fewer time points at a time or crop the data."
        )


def _time_point(data: Any, ax: Axes, t: int | None) -> Any:
    """The (Z, Y, X[, C]) stack of time point ``t``, as a view (lazy for dask arrays)."""
    if t is not None:
        index = [slice(None)] * len(ax.axes)
        index[ax.axes.index("T")] = t
        data = data[tuple(index)]
    order = ax.stack_order()
    return data.transpose(order) if order != list(range(len(order))) else data


def _core_layout(ax: Axes) -> dict[str, Any]:
    """How to tell the core about a (Z, Y, X[, C]) stack with these channels."""
    if ax.channel_letter is None:
        return {"rgb": False}
    return {"rgb": True} if ax.rgb else {"channel_axis": 3, "rgb": False}


def _aligned(
    stack: Any, layout: dict[str, Any], focus_channel: int | None, model: str
) -> tuple[np.ndarray, list[alignment.Transform], np.ndarray]:
    """Align one time point on the luminance that decides focus; all channels move alike."""
    raw = np.asarray(stack)  # one time point, read once
    checked = as_stack(raw, **layout)
    block = np.asarray(checked.data, dtype=np.float32)
    norm = normalisation(checked, focus_channel)
    transforms = alignment.estimate_transforms(norm.luminance(block), model)
    aligned, covered = alignment.apply_transforms(raw, transforms)
    return aligned, transforms, covered


def fuse_hyperstack_iter(
    data: Any,
    axes: str,
    *,
    channel_mode: str = "combined",
    focus_channel: int | None = None,
    align: str | None = None,
    **fuse_options: Any,
) -> Generator[Progress, None, HyperstackResult]:
    """Fuse every time point of ``data`` (axes named by ``axes``), yielding overall progress.

    Progress counts tiles over all time points (and channels, when separate). ``align`` is
    None (default), "translation" or "similarity". Other options (``method``, ``z_spacing``,
    ``tile``, ``device``, ``weights``, ``correct_brightness``) are those of
    :func:`napari_pdmfuse.fuse`.
    """
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        data = np.asarray(data)
    ax = parse_axes(axes, data.shape)
    _check_options(ax, channel_mode, focus_channel, fuse_options)
    if align is not None:
        alignment.check_model(align)
    separate = channel_mode == "separate"
    _check_result_memory(ax, np.dtype(data.dtype), separate)
    layout = _core_layout(ax)
    times: list[int | None] = [None] if ax.n_times is None else list(range(ax.n_times))
    jobs_per_time = ax.n_channels if separate else 1
    n_jobs = len(times) * jobs_per_time

    t_axes = "T" if ax.n_times is not None else ""
    map_axes = t_axes + ((ax.channel_letter or "") if separate else "") + "YX"
    fused_axes = ax.fused_axes
    canonical = t_axes + "YX" + (ax.channel_letter or "")
    fused_out: np.ndarray | None = None
    focus_out: np.ndarray | None = None
    conf_out: np.ndarray | None = None
    transforms: list[list[alignment.Transform]] = []
    coverages: list[np.ndarray] = []
    done_before, jobs_done, started = 0, 0, False
    result: FusionResult | None = None

    for t in times:
        stack = _time_point(data, ax, t)
        if align is not None:
            stack, plane_transforms, covered = _aligned(stack, layout, focus_channel, align)
            transforms.append(plane_transforms)
            coverages.append(covered)
        parts: list[FusionResult] = []
        for c in range(jobs_per_time):
            if separate:
                gen = fuse_iter(stack[..., c], rgb=False, **fuse_options)
            elif focus_channel is not None:
                gen = fuse_iter(stack, **layout, focus_channel=focus_channel, **fuse_options)
            else:
                gen = fuse_iter(stack, **layout, **fuse_options)
            while True:
                try:
                    p = next(gen)
                except StopIteration as stop:
                    result = stop.value
                    break
                if p.done or not started:
                    started = True
                    total = done_before + (n_jobs - jobs_done) * p.total
                    yield Progress(done_before + p.done, total)
            assert result is not None
            parts.append(result)
            done_before += p.total
            jobs_done += 1
        if separate:
            fused_t = np.stack([r.fused for r in parts], axis=-1)
            focus_t = np.stack([r.focus_map for r in parts])
            conf_t = np.stack([r.confidence for r in parts])
        else:
            fused_t, focus_t, conf_t = parts[0].fused, parts[0].focus_map, parts[0].confidence
        if fused_out is None:
            n = () if t is None else (len(times),)
            fused_out = np.empty(
                tuple(ax.shape[ax.axes.index(a)] for a in fused_axes), dtype=fused_t.dtype
            )
            focus_out = np.empty(n + focus_t.shape, dtype=np.float32)
            conf_out = np.empty(n + conf_t.shape, dtype=np.float32)
        assert focus_out is not None and conf_out is not None
        view = fused_out.transpose([fused_axes.index(a) for a in canonical])
        where = () if t is None else (t,)
        view[where] = fused_t
        focus_out[where] = focus_t
        conf_out[where] = conf_t

    assert fused_out is not None and focus_out is not None and conf_out is not None
    assert result is not None
    covered_out = None
    if coverages:
        covered_out = np.stack(coverages) if ax.n_times is not None else coverages[0]
    return HyperstackResult(
        fused=fused_out,
        focus_map=focus_out,
        confidence=conf_out,
        axes=fused_axes,
        map_axes=map_axes,
        method=result.method,
        focus_unit=result.focus_unit,
        transforms=transforms or None,
        coverage=covered_out,
    )


def fuse_hyperstack(data: Any, axes: str, **options: Any) -> HyperstackResult:
    """Fuse a hyperstack in one call; see :func:`fuse_hyperstack_iter` for the options."""
    gen = fuse_hyperstack_iter(data, axes, **options)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
