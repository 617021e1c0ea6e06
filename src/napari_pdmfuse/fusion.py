"""Fusing in memory: an array in, a :class:`~napari_pdmfuse.results.FusionResult` out.

:func:`fuse_iter` is a plain generator — napari's ``thread_worker`` runs it in the widget,
scripts drain it for a progress bar, and :func:`fuse` simply drains it — and it runs the same
job as the command line (:mod:`.planning`), only with its outputs kept in memory.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from .errors import InputError
from .options import FuseOptions
from .planning import Progress, plan_job
from .reading import Image, normalise_axes
from .results import FusionResult, MemoryOutputs, check_memory
from .stack import as_stack


def image_from_array(
    data: Any,
    *,
    axes: str | None = None,
    z_axis: int = 0,
    channel_axis: int | None = None,
    rgb: bool | None = None,
) -> Image:
    """An :class:`Image` of an array (numpy, dask, or a list of planes).

    ``axes`` names every axis (e.g. "TZCYX"); without it, the array is one focus stack whose
    Z axis is ``z_axis`` and whose channels, if any, are on ``channel_axis`` — a trailing axis
    of 3 or 4 on a 4-D array is RGB(A) unless ``rgb`` is False.
    """
    if axes is not None:
        if any(v is not None for v in (channel_axis, rgb)) or z_axis != 0:
            raise InputError(
                "The axes string already says where Z and the channels are; drop z_axis, "
                "channel_axis and rgb."
            )
        if not hasattr(data, "shape") or not hasattr(data, "dtype"):
            import numpy as np

            data = np.asarray(data)
        return Image(data=data, axes=normalise_axes(axes, data.shape))
    stack = as_stack(data, z_axis=z_axis, channel_axis=channel_axis, rgb=rgb)
    if stack.layout == "grey":
        return Image(data=stack.planes, axes="ZYX")
    return Image(data=stack.data, axes="ZYX" + ("S" if stack.layout == "rgb" else "C"))


def _options(options: FuseOptions | None, values: dict[str, Any]) -> FuseOptions:
    if options is not None and values:
        raise InputError(
            "Give the options either as a FuseOptions or as keywords, not both "
            f"({', '.join(values)})."
        )
    if options is not None:
        return options
    try:
        return FuseOptions(**values)
    except TypeError:
        known = ", ".join(FuseOptions.__dataclass_fields__)
        unknown = ", ".join(sorted(set(values) - set(FuseOptions.__dataclass_fields__)))
        raise InputError(f"Unknown option {unknown}; the options are {known}.") from None


def fuse_iter(
    data: Any,
    *,
    axes: str | None = None,
    z_axis: int = 0,
    channel_axis: int | None = None,
    rgb: bool | None = None,
    options: FuseOptions | None = None,
    **values: Any,
) -> Generator[Progress, None, FusionResult]:
    """Fuse a focus stack (or a time-lapse, or channels) in memory, yielding :class:`Progress`.

    ``axes`` names every axis of ``data`` with the letters T Z C S Y X (e.g. "TZCYX"); the
    result's arrays then have the axes ``T C Y X`` (those present, RGB samples last). Without
    ``axes``, ``data`` is one stack with its Z axis at ``z_axis`` and channels at
    ``channel_axis`` (or RGB), and the fused image is (Y, X[, C]). The fusion options are
    those of :class:`~napari_pdmfuse.options.FuseOptions`, given as ``options=`` or as
    keywords (``method``, ``selection``, ``device``, ``weights``, ``tile``, ``channel_mode``,
    ``focus_channel``, ``align``, ``correct_brightness``, ``focus_units``, ``z_spacing``: the
    step between planes, which puts the focus map in those units). Results larger than the
    free memory are refused before any work: :func:`napari_pdmfuse.fuse_files` streams them
    to disk instead.
    """
    image = image_from_array(data, axes=axes, z_axis=z_axis, channel_axis=channel_axis, rgb=rgb)
    job = plan_job(image, _options(options, values))
    check_memory(job)
    sink = MemoryOutputs(job)
    yield from job.run(sink)
    return sink.result(channels_last=axes is None)


def fuse(data: Any, **options: Any) -> FusionResult:
    """Fuse in one call; see :func:`fuse_iter` for the arguments."""
    gen = fuse_iter(data, **options)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
