"""What each axis of an image holds, in the letters T Z C S Y X: checked once, named once.

Files label their axes in many ways (ImageJ hyperstacks, OME, tifffile's guesses for unlabelled
pages) and users name them with ``--axes`` or in the widget; every one of these ends in
:func:`normalise_axes`, so an impossible axes string is refused with the same sentence wherever
it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError
from .guarded import unreadable

#: The axis letters understood, as in ImageJ / OME / tifffile, and what they hold.
AXIS_NAMES = {
    "T": "time",
    "Z": "focus",
    "C": "channel",
    "S": "RGB samples",
    "Y": "rows",
    "X": "columns",
}

#: Axes tifffile uses for planes of an unlabelled multi-page file (image sequence / unknown).
GENERIC_PLANE_AXES = "IQ"


def normalise_axes(axes: str, shape: Sequence[int], source: str = "the data") -> str:
    """``axes`` upper-cased, once it names each axis of an array of ``shape`` with one of the
    letters T Z C S Y X: each letter once, Z, Y and X present, not both C and S, and S of 3 or
    4 samples (RGB or RGBA). ``source`` (a file, "the data") is named in the refusals."""
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
            f"The axes {axes!r} name {len(upper)} axes but {source} has {len(shape)} (shape "
            f"{shape}); give one letter per axis."
        )
    missing = [a for a in "ZYX" if a not in upper]
    if missing:
        raise InputError(
            f"The axes {axes!r} of {source} have no {' or '.join(missing)} axis; a focus stack "
            "needs Z, Y and X."
        )
    if "C" in upper and "S" in upper:
        raise InputError(
            f"The axes {axes!r} of {source} have both channels (C) and RGB samples (S); fuse one "
            "of them at a time, e.g. by selecting a single channel."
        )
    if "S" in upper and shape[upper.index("S")] not in (3, 4):
        raise InputError(
            f"The S axis of {source} has {shape[upper.index('S')]} samples but RGB(A) has 3 or "
            "4; call it C to fuse other channel counts."
        )
    return upper


def squeeze(data: Any, axes: str) -> tuple[Any, str]:
    """Drop axes of length one (a single channel or time point), keeping Y and X."""
    keep = [i for i, (a, n) in enumerate(zip(axes, data.shape, strict=True)) if n > 1 or a in "YX"]
    data = data[tuple(slice(None) if i in keep else 0 for i in range(len(axes)))]
    return data, "".join(axes[i] for i in keep)


def ordered(data: Any, order: list[int]) -> Any:
    """``data`` with its axes in ``order``, untouched when already so: dask narrows a read to
    the part asked for only through plain slicing, not through a transpose, even a no-op."""
    return data if order == list(range(len(order))) else data.transpose(order)


def require_planes(path: Path, extra: list[str], n_series: int) -> None:
    """Refuse a file with no axis beyond Y, X and samples: it holds no stack of planes."""
    if extra:
        return
    if n_series > 1:
        raise InputError(
            f"The pages of {path} differ in size or type, so they do not form one stack; save "
            "the focal planes with one size and data type."
        )
    raise InputError(
        f"{path} holds a single 2-D image, not a stack; give the file with all focal planes, "
        "or several plane files."
    )


def viewable_axes(data: Any, axes: str, path: Path) -> tuple[Any, str]:
    """A file's array (``axes`` in tifffile's letters) without its axes of length one, with
    the letters T Z C S Y X where the file says (or implies) what an axis holds: samples that
    are not RGB(A) are channels, and unlabelled pages (tifffile's I or Q) are the focal planes
    when they are the only axis besides Y, X and samples. Other letters are left as they are."""
    data, axes = squeeze(data, axes)
    if "Y" not in axes or "X" not in axes:
        raise unreadable(path)
    if "S" in axes and data.shape[axes.index("S")] not in (3, 4) and "C" not in axes:
        axes = axes.replace("S", "C")  # extra samples that are not RGB(A): channels
    extra = [a for a in axes if a not in "YXS"]
    if "Z" not in axes and len(extra) == 1 and extra[0] in GENERIC_PLANE_AXES:
        axes = axes.replace(extra[0], "Z")  # unlabelled pages: the focal planes
    return data, axes


def file_axes(data: Any, axes: str, path: Path, n_series: int) -> tuple[Any, str]:
    """A file's array (``axes`` in tifffile's letters) without its axes of length one, and its
    axes in the letters T Z C S Y X, or a one-sentence refusal.

    Unlabelled pages (tifffile's I or Q) are the focal planes when they are the only axis
    besides Y, X and samples; samples that are not RGB(A) are channels.
    """
    data, axes = viewable_axes(data, axes, path)
    extra = [a for a in axes if a not in "YXS"]
    require_planes(path, extra, n_series)
    if "Z" not in axes and not any(a in GENERIC_PLANE_AXES for a in extra):
        raise InputError(
            f"{path} has axes {axes} but none is Z; name the focal-plane axis (--axes on the "
            "command line, e.g. --axes ZYX), or save the planes as a Z stack."
        )
    sizes = zip(axes, data.shape, strict=True)
    unknown = [f"{a}={n}" for a, n in sizes if a not in AXIS_NAMES]
    if unknown:
        raise InputError(
            f"{path} has axes {axes}, and pdmfuse cannot tell which is time, focus or channels "
            f"({', '.join(unknown)}); name every axis (--axes on the command line, e.g. "
            "--axes TZCYX)."
        )
    return data, axes


def given_axes(
    data: Any, full_axes: str, full_shape: tuple[int, ...], path: Path, axes: str
) -> tuple[Any, str]:
    """A file's array (``data``, its axes of length one dropped) with the axes the user named.

    ``axes`` names either the axes of ``data`` or the file's own axes (``full_axes`` of
    ``full_shape``) with some or all of its axes of length one kept, so ``--axes TZYX`` works on
    a file holding one time point.
    """
    letters = axes.upper()
    if len(letters) != data.ndim:
        full = list(zip(full_axes, full_shape, strict=True))
        named = [(a, n) for a, n in full if n != 1 or a in letters]
        if "".join(a for a, _ in named) == letters:  # the file's axes, with named singletons
            data = data.reshape(tuple(n for _, n in named))
    return data, normalise_axes(axes, data.shape, str(path))
