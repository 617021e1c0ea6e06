"""Write fusion results as TIFFs without ever leaving a half-written file or losing an input.

Every output is first written to a hidden temporary file in its target folder and moved over the
target with :func:`os.replace` only once all outputs are complete, so an interrupted or failed
run leaves the previous files as they were. Outputs are checked (existing, equal to an input,
folder missing) before any work, so a long fusion never ends in a refusal.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile

from .errors import OutputError
from .fusion import FusionResult

TIFF_SUFFIXES = (".tif", ".tiff")

#: Data types ImageJ opens natively; anything else is written as a plain TIFF.
IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))


@dataclass(frozen=True)
class Scale:
    """Physical pixel size, recorded in the outputs so measurements keep working downstream."""

    pixel_size: tuple[float, float] | None = None  # (y, x)
    unit: str | None = None  # "um" for micrometres


def temp_name(target: Path) -> Path:
    """A hidden sibling of ``target``, so the final rename stays on one file system."""
    return target.with_name(f".{target.name}.pdmfuse-tmp-{secrets.token_hex(4)}")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(
    outputs: Sequence[str | Path | None],
    inputs: Sequence[str | Path] = (),
    *,
    overwrite: bool = False,
) -> list[Path]:
    """Validate output paths before any work; returns them as Paths (None entries dropped).

    Raises OutputError for a non-TIFF name, an output given twice, an output that is an input
    or lies in an input folder, an existing output without ``overwrite``, or a missing or
    read-only target folder.
    """
    checked: list[Path] = []
    input_paths = [Path(p) for p in inputs]
    for out in outputs:
        if out is None:
            continue
        path = Path(out)
        if path.suffix.lower() not in TIFF_SUFFIXES:
            raise OutputError(
                f"The output {path} is not named .tif or .tiff; pdmfuse writes TIFF files, so "
                "give it a .tif name."
            )
        if any(_same_file(path, other) for other in checked):
            raise OutputError(f"{path} is named as two outputs; give each output its own name.")
        if any(_same_file(path, src) for src in input_paths):
            raise OutputError(
                f"The output {path} is also an input; write to another file so the input is kept."
            )
        if path.is_dir():
            raise OutputError(f"The output {path} is a folder; give a file name for it.")
        if any(src.is_dir() and _same_file(path.parent, src) for src in input_paths):
            raise OutputError(
                f"The output {path} is inside the input folder, where a later run would take it "
                "for a focal plane; write it to another folder."
            )
        if path.exists() and not overwrite:
            raise OutputError(
                f"The output {path} already exists; choose another name or allow overwriting "
                "(--overwrite)."
            )
        folder = path.parent
        if not folder.is_dir():
            raise OutputError(
                f"The folder {folder} for {path.name} does not exist; create it first."
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(
                f"The folder {folder} is not writable; check its permissions or choose another one."
            )
        checked.append(path)
    return checked


@contextmanager
def atomic_files(targets: Sequence[Path]) -> Iterator[list[Path]]:
    """Yield temporary paths for ``targets``; move them into place only if the block succeeds.

    On any exception, KeyboardInterrupt included, the temporary files are removed and the
    targets are left untouched.
    """
    temps: list[Path] = []
    try:
        for target in targets:
            temp = temp_name(target)
            # O_EXCL: never clobber a stranger's file; mode 0o666 lets the umask decide as usual.
            os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            temps.append(temp)
        yield list(temps)
        for temp in temps:
            with temp.open("rb+") as handle:
                os.fsync(handle.fileno())
        for temp, target in zip(temps, targets, strict=True):
            os.replace(temp, target)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise


def write_tiff(path: Path, data: np.ndarray, *, rgb: bool = False, scale: Scale = Scale()) -> None:
    """Write one 2-D image (grey, RGB(A) or (Y, X, C) channels) as an ImageJ-readable TIFF.

    ImageJ metadata is used whenever ImageJ can open the result (8/16-bit or float32 grey or
    channels, 8-bit RGB); other types are written as plain TIFFs with the same resolution tags.
    """
    from . import __version__

    data = np.asarray(data)
    samples = data.shape[-1] if data.ndim == 3 else 1
    kwargs: dict[str, object] = {"software": f"napari-pdmfuse {__version__}"}
    if rgb:
        kwargs["photometric"] = "rgb"
        if samples == 4:
            kwargs["extrasamples"] = ("unassalpha",)
        axes = "YXS"
        imagej = data.dtype == np.uint8 and samples == 3
    else:
        kwargs["photometric"] = "minisblack"
        if data.ndim == 3:
            data = np.moveaxis(data, -1, 0)
        axes = "CYX" if data.ndim == 3 else "YX"
        imagej = data.dtype in IMAGEJ_DTYPES
    metadata: dict[str, object] = {"axes": axes}
    if scale.pixel_size is not None and scale.unit:
        py, px = scale.pixel_size
        if imagej:
            kwargs["resolution"] = (1 / px, 1 / py)
            metadata["unit"] = scale.unit
        elif scale.unit == "um":
            kwargs["resolution"] = (1e4 / px, 1e4 / py)
            kwargs["resolutionunit"] = "CENTIMETER"
    tifffile.imwrite(path, data, imagej=imagej, metadata=metadata, **kwargs)


def write_outputs(
    result: FusionResult,
    fused: str | Path,
    *,
    focus_map: str | Path | None = None,
    confidence: str | Path | None = None,
    rgb: bool | None = None,
    scale: Scale = Scale(),
    inputs: Sequence[str | Path] = (),
    overwrite: bool = False,
) -> list[Path]:
    """Write the fused image (input dtype) and, if asked, the float32 focus and confidence maps.

    All files appear together or not at all. ``rgb`` says whether a trailing axis of length 3
    or 4 is colour (the default guesses so) rather than separate channels.
    """
    paths = check_outputs([fused, focus_map, confidence], inputs, overwrite=overwrite)
    image = np.asarray(result.fused)
    if rgb is None:
        rgb = image.ndim == 3 and image.shape[-1] in (3, 4)
    arrays: list[tuple[np.ndarray, bool]] = [(image, rgb)]
    if focus_map is not None:
        arrays.append((np.asarray(result.focus_map, dtype=np.float32), False))
    if confidence is not None:
        arrays.append((np.asarray(result.confidence, dtype=np.float32), False))
    try:
        with atomic_files(paths) as temps:
            for temp, (data, is_rgb) in zip(temps, arrays, strict=True):
                write_tiff(temp, data, rgb=is_rgb, scale=scale)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(
            f"Writing {paths[0].parent} failed ({reason}); free some space or choose another "
            "folder, nothing was written."
        ) from None
    return paths
