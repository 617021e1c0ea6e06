"""``pdmfuse``: fuse focus stacks from the command line, for batches and headless machines.

The command reads lazily, checks every output (and the free disk space) before fusing, drives a
progress bar from the fusion plan and streams tiles into temporary TIFFs that are moved into
place only when complete, so a failed or interrupted run never leaves partial files and results
larger than memory can be written. Errors a user can fix are one line on stderr and exit
status 2; ``pdmfuse batch`` fuses many stacks and carries on past the bad ones.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .errors import InputError, PdmFuseError, PdmFuseWarning
from .methods import DEFAULT_METHOD, METHODS

if TYPE_CHECKING:
    from .io import Hyperstack

EXIT_OK = 0
EXIT_FAILED = 1  # batch: a stack failed for a reason that is not the input's (a bug)
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEVICES = ("auto", "cpu", "cuda")
CHANNEL_MODES = ("combined", "separate")
ALIGN_MODELS = ("translation", "similarity")
FOCUS_UNITS = ("slices", "um")


class Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C so that temporary files are removed on the way out."""


def _choice(kind: str, choices: Sequence[str]) -> Callable[[str], str]:
    """An argparse type that refuses a name outside ``choices`` in our words."""

    def check(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a {kind}; choose one of {', '.join(choices)}"
            )
        return text

    return check


def _axes(text: str) -> str:
    letters = text.upper()
    if not letters or any(a not in "TZCSYX" for a in letters) or len(set(letters)) != len(letters):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an axes string; give one letter per axis of the file, each once, "
            "from T Z C S Y X (e.g. TZCYX)"
        )
    return letters


def _channel_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a channel number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a channel number (0 is the first)")
    return value


def _micrometres(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of micrometres") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive Z step in micrometres")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of pixels")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one worth reading (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


INPUT_HELP = (
    "a multi-page TIFF (its Z axis, or its pages, are the focal planes), a folder of plane "
    "images (.tif .tiff .png .jpg .jpeg .bmp, in natural name order: z2 before z10)"
)


def _add_fusion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--method",
        type=_choice("method", METHODS),
        metavar="{" + ",".join(METHODS) + "}",
        default=DEFAULT_METHOD,
        help="fusion method: pdmnet (neural network), wavelet, pyramid (Laplacian pyramid) or "
        "argmax (sharpest plane per pixel, the naive reference)",
    )
    parser.add_argument(
        "--device",
        type=_choice("device", DEVICES),
        metavar="{" + ",".join(DEVICES) + "}",
        default="auto",
        help="where pdmnet runs: auto uses a CUDA GPU when one is available",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE.pt",
        help="pdmnet weights to use instead of the shipped ones, e.g. from "
        "'python -m napari_pdmfuse.train'; read as plain tensors only, and checked against the "
        "sha256 of FILE.json when that card lies beside it",
    )
    parser.add_argument(
        "--tile",
        type=_positive_int,
        metavar="N",
        default=None,
        help="tile size in pixels, to bound memory (default: sized automatically; at least the "
        "method's context: 16 px for argmax, 160 px for wavelet and pyramid, 96 px for pdmnet)",
    )
    parser.add_argument(
        "--correct-brightness",
        action="store_true",
        help="even out lamp flicker or bleaching between planes: each plane's signal is scaled "
        "to the stack's mean, for the focus decision and the fused image alike",
    )
    hyper = parser.add_argument_group(
        "time points, channels, units and alignment",
        "Files with a time axis or channels (ImageJ hyperstacks, OME-TIFF) are fused one time "
        "point at a time, and the outputs keep their time and channel axes, pixel size and "
        "channel names.",
    )
    hyper.add_argument(
        "--axes",
        type=_axes,
        metavar="AXES",
        help="what each axis of the file holds, one letter per axis, overriding the file's own "
        "labels: T (time), Z (focal planes), C (channels), S (RGB samples), Y, X; e.g. TZCYX",
    )
    hyper.add_argument(
        "--channel-mode",
        type=_choice("channel mode", CHANNEL_MODES),
        metavar="{" + ",".join(CHANNEL_MODES) + "}",
        default="combined",
        help="combined: one focus map from all channels, followed by every channel; separate: "
        "each channel fused on its own, with its own focus map",
    )
    hyper.add_argument(
        "--focus-channel",
        type=_channel_index,
        metavar="K",
        help="decide focus on channel K alone (0 = first), e.g. a structural stain; every "
        "channel follows its focus map (combined mode)",
    )
    hyper.add_argument(
        "--align",
        type=_choice("alignment model", ALIGN_MODELS),
        metavar="{" + ",".join(ALIGN_MODELS) + "}",
        help="register the planes to the middle one before fusing: translation (stage drift) or "
        "similarity (drift and focus breathing); off by default",
    )
    hyper.add_argument(
        "--focus-units",
        type=_choice("focus unit", FOCUS_UNITS),
        metavar="{" + ",".join(FOCUS_UNITS) + "}",
        help="unit of the focus map: slices (0 = first plane) or um (distance from the first "
        "plane, from the file's Z step or --z-spacing) (default: slices, um with --z-spacing)",
    )
    hyper.add_argument(
        "--z-spacing",
        type=_micrometres,
        metavar="UM",
        help="the Z step between planes in micrometres, instead of the file's",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress bar and no summary"
    )


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .batch import add_batch_parser

    parser = argparse.ArgumentParser(
        prog="pdmfuse",
        description=(
            "Fuse a microscopy focus stack (z-stack) into one all-in-focus image, with a focus "
            "map (which plane is in focus where) and a confidence map."
        ),
        epilog="Run 'pdmfuse fuse --help' or 'pdmfuse batch --help' for their options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fuse = commands.add_parser(
        "fuse",
        help="fuse a focus stack into an all-in-focus TIFF",
        description=(
            f"Fuse a focus stack into one all-in-focus image. INPUT is {INPUT_HELP}, or two or "
            "more plane files, taken in the order given (a shell glob sorts z10 before z2: pass "
            "the folder instead). Outputs are TIFFs; nothing is written if anything fails."
        ),
        formatter_class=_HelpFormatter,
    )
    fuse.add_argument("inputs", nargs="+", metavar="INPUT", help="stack file, folder or planes")
    fuse.add_argument(
        "-o",
        "--output",
        required=True,
        type=Path,
        metavar="FUSED.tif",
        help="all-in-focus image to write, with the input's data type and colour; the name "
        "picks the format: .tif (ImageJ TIFF when ImageJ can open it), .ome.tif (tiled "
        "OME-TIFF with a pyramid) or .ome.zarr (OME-Zarr with a pyramid; single stacks)",
    )
    fuse.add_argument(
        "--focus-map",
        type=Path,
        metavar="MAP.tif",
        help="also write the focus map: float32, index of the in-focus plane (0 = first, "
        "fractional between planes)",
    )
    fuse.add_argument(
        "--confidence",
        type=Path,
        metavar="C.tif",
        help="also write the confidence map: float32 in [0, 1], 0 where the stack shows no "
        "focus information",
    )
    fuse.add_argument(
        "--coverage",
        type=Path,
        metavar="MASK.tif",
        help="with --align, also write the region every aligned plane covers: uint8, 255 "
        "inside, 0 where some plane saw nothing (its edge pixels were repeated there)",
    )
    fuse.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="fuse on this dask.distributed cluster, one task per tile (default: the "
        "DASK_SCHEDULER_ADDRESS environment variable, else this machine); workers need "
        "napari-pdmfuse and the input files at the same paths",
    )
    _add_fusion_options(fuse)
    fuse.set_defaults(handler=run_fuse)
    add_batch_parser(commands, _add_fusion_options, _HelpFormatter)
    return parser


@dataclass(frozen=True)
class Written:
    """What one stack's run produced, for the summary line."""

    shape: tuple[int, ...]
    paths: list[Path]
    seconds: float
    description: str = ""


def describe_inputs(inputs: Sequence[Path]) -> str:
    return str(inputs[0]) if len(inputs) == 1 else f"{inputs[0]} … {inputs[-1]}"


def _naming(exc: PdmFuseError, source: str) -> PdmFuseError:
    """The same error, its message prefixed with the input's name unless it names a file."""
    message = str(exc)
    if source in message:
        return exc
    return type(exc)(f"{source}: {message}")


def needs_hyperstack(options: argparse.Namespace, hyper: Hyperstack) -> bool:
    """Whether the run goes through the hyperstack path: time points, channels that are not
    RGB colour, or an option only that path has (axes, channel options, alignment)."""
    return bool(
        hyper.has_time
        or hyper.has_channels
        or options.axes
        or options.align
        or options.channel_mode != "combined"
        or options.focus_channel is not None
    )


def focus_spacing(options: argparse.Namespace, hyper: Hyperstack, source: str) -> float | None:
    """The Z step (µm) the focus map is scaled by, or None for a map in slices."""
    units = options.focus_units or ("um" if options.z_spacing else "slices")
    if units == "slices":
        return None
    if options.z_spacing:
        return float(options.z_spacing)
    if hyper.z_spacing and hyper.unit == "um":
        return float(hyper.z_spacing)
    raise InputError(
        f"{source} records no Z step in micrometres, so the focus map cannot be given in µm; "
        "pass the step with --z-spacing UM."
    )


def fuse_to_files(
    inputs: Sequence[Path],
    fused: Path,
    *,
    focus_map: Path | None,
    confidence: Path | None,
    options: argparse.Namespace,
    coverage: Path | None = None,
    keep: Sequence[Path] = (),
    label: str = "pdmfuse",
) -> Written:
    """Read, check, fuse (tile by tile into temporary TIFFs, or one time point at a time for
    hyperstacks), and move the outputs into place.

    ``keep`` lists further files that must never be written over (the other inputs of a batch).
    Raises PdmFuseError, its message naming the input, for anything the user can fix.
    """
    from .io import read_hyperstack
    from .ngff import is_zarr_name
    from .writing import check_outputs

    started = time.perf_counter()
    outputs = [fused, focus_map, confidence, coverage]
    raw = [Path(p) for p in inputs]
    # Refuse clashing outputs before even opening the inputs, then again against every file read.
    check_outputs(outputs, [*raw, *keep], overwrite=options.overwrite)
    source = describe_inputs(raw)
    hyper = read_hyperstack(raw, axes=options.axes)  # its messages name the file
    protected = [*raw, *keep, *hyper.sources]
    check_outputs(outputs, protected, overwrite=options.overwrite)
    kinds = ("fused", "focus_map", "confidence", "coverage")
    targets = {k: p for k, p in zip(kinds, outputs, strict=True) if p is not None}
    try:
        spacing = focus_spacing(options, hyper, source)
        if needs_hyperstack(options, hyper):
            if getattr(options, "scheduler", None):
                raise InputError(
                    "--scheduler fuses single focus stacks only, not time points, channels, "
                    "--axes, --align or channel options; run without a scheduler."
                )
            if any(is_zarr_name(p) for p in targets.values()):
                raise InputError(
                    "OME-Zarr outputs are written for single focus stacks (grey or RGB), not "
                    "for time points, channels, --axes, --align or channel options; name the "
                    "outputs .ome.tif instead."
                )
            paths, description = _fuse_hyperstack(hyper, targets, options, spacing, label)
        else:
            paths, description = _fuse_streaming(hyper, targets, options, spacing, label)
    except PdmFuseError as exc:
        raise _naming(exc, source) from None
    seconds = time.perf_counter() - started
    return Written(tuple(hyper.data.shape), paths, seconds, description)


def _bar(label: str, total: int | None, options: argparse.Namespace) -> Any:
    from tqdm import tqdm

    return tqdm(
        desc=label,
        total=total,
        unit="tile",
        file=sys.stderr,
        disable=options.quiet,
        dynamic_ncols=True,
    )


def _fuse_streaming(
    hyper: Hyperstack,
    targets: dict[str, Path],
    options: argparse.Namespace,
    spacing: float | None,
    label: str,
) -> tuple[list[Path], str]:
    """One focus stack: fused tile by tile straight into temporary TIFFs."""
    from .fusion import plan
    from .writing import FileSink, Scale, atomic_files, check_space

    stack = hyper.as_stack()
    job = plan(
        stack.data,
        method=options.method,
        rgb=stack.rgb,
        channel_axis=stack.channel_axis,
        tile=options.tile,
        device=options.device,
        weights=options.weights,
        correct_brightness=options.correct_brightness,
    )
    paths = list(targets.values())
    maps = {"focus_map": "focus_map" in targets, "confidence": "confidence" in targets}
    check_space(job.stack, paths, **maps)
    with atomic_files(paths) as temps:
        named = dict(zip(targets, temps, strict=True))
        sink = FileSink(
            job.stack,
            named["fused"],
            focus_map=named.get("focus_map"),
            confidence=named.get("confidence"),
            scale=Scale(stack.pixel_size, stack.unit),
            focus_scale=spacing,
        )
        bar = _bar(label, job.n_tiles, options)
        client = None
        try:
            steps = job.run(sink)
            if getattr(options, "scheduler", None):
                from .cluster import connect, run_on_cluster

                client = connect(options.scheduler)
                steps = run_on_cluster(
                    job,
                    sink,
                    client,
                    method_name=options.method,
                    device=options.device,
                    weights=options.weights,
                )
            for progress in steps:
                bar.update(progress.done - bar.n)
            sink.finish()
        finally:
            bar.close()
            sink.close()
            if client is not None:
                client.close()
    z, y, x = (int(n) for n in stack.data.shape[:3])
    return paths, f"{z} planes of {y}×{x}"


def _fuse_hyperstack(
    hyper: Hyperstack,
    targets: dict[str, Path],
    options: argparse.Namespace,
    spacing: float | None,
    label: str,
) -> tuple[list[Path], str]:
    """Time points and channels: fused one time point at a time, written with their axes."""
    import numpy as np

    from .hyperstack import HyperstackResult, fuse_hyperstack_iter, parse_axes
    from .sizes import MAP_BYTES, check_disk
    from .writing import Scale, atomic_files, write_failed, write_hyperstack
    from .writing.ometiff import is_ome_tiff_name

    ax = parse_axes(hyper.axes, hyper.data.shape)
    separate = options.channel_mode == "separate"
    height, width = ax.shape_yx
    times = ax.n_times or 1
    maps = times * (ax.n_channels if separate else 1) * height * width
    sizes = {
        "fused": times * ax.n_channels * height * width * np.dtype(hyper.data.dtype).itemsize,
        "focus_map": maps * MAP_BYTES,
        "confidence": maps * MAP_BYTES,
        "coverage": times * height * width,
    }
    check_disk([(path, sizes[kind]) for kind, path in targets.items()])
    gen = fuse_hyperstack_iter(
        hyper.data,
        hyper.axes,
        channel_mode=options.channel_mode,
        focus_channel=options.focus_channel,
        align=options.align,
        method=options.method,
        tile=options.tile,
        device=options.device,
        weights=options.weights,
        correct_brightness=options.correct_brightness,
        z_spacing=spacing,
    )
    bar = None  # opened at the first progress, once the options and data passed their checks
    try:
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                result: HyperstackResult = stop.value
                break
            if bar is None:
                bar = _bar(label, progress.total, options)
            elif bar.total != progress.total:
                bar.total = progress.total
                bar.refresh()
            bar.update(progress.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    if options.align and not options.quiet:
        _print_alignment(result, options.align)

    scale = Scale(hyper.pixel_size, hyper.unit, hyper.time_interval)
    names = hyper.channel_names
    cover_axes = "T" * (ax.n_times is not None) + "YX"
    arrays = {
        "fused": (result.fused, result.axes),
        "focus_map": (result.focus_map, result.map_axes),
        "confidence": (result.confidence, result.map_axes),
    }
    if result.coverage is not None:
        arrays["coverage"] = (result.coverage.astype(np.uint8) * np.uint8(255), cover_axes)
    paths = list(targets.values())
    try:
        with atomic_files(paths) as temps:
            for (kind, target), temp in zip(targets.items(), temps, strict=True):
                data, axes = arrays[kind]
                write_hyperstack(
                    temp,
                    data,
                    axes.replace("S", "") if kind != "fused" else axes,
                    scale=scale,
                    channel_names=names,
                    ome=is_ome_tiff_name(target),
                )
    except OSError as exc:
        raise write_failed(paths[0].parent, exc) from None
    n_planes = ax.shape[ax.axes.index("Z")]
    text = f"{n_planes} planes of {height}×{width}"
    if ax.n_times is not None:
        text = f"{ax.n_times} time points × {text}"
    if "C" in ax.axes:
        text += f" ({ax.n_channels} channels{', each on its own' if separate else ''})"
    return paths, text


def _print_alignment(result: Any, model: str) -> None:
    """The alignment report of each time point, and how much of the field all planes cover."""
    from .align import report

    transforms = result.transforms or []
    coverage = result.coverage
    for t, planes in enumerate(transforms):
        covered = coverage[t] if coverage is not None and coverage.ndim == 3 else coverage
        where = f", time point {t + 1} of {len(transforms)}" if len(transforms) > 1 else ""
        fraction = float(covered.mean()) if covered is not None else 1.0
        print(
            f"pdmfuse: alignment ({model}){where}: every plane covers {100 * fraction:.1f} % of "
            "the field",
            file=sys.stderr,
        )
        print(report(planes), file=sys.stderr)


def check_options(options: argparse.Namespace) -> None:
    """Refuse a bad method, device, weights file, tile size or combination of options before
    any input is read."""
    from .methods import get_method
    from .sizes import check_tile

    method = get_method(options.method, device=options.device, weights=options.weights)
    if options.tile is not None:
        check_tile(options.tile, method.name, method.halo, method.align)
    if options.focus_units == "slices" and options.z_spacing:
        raise InputError(
            "--z-spacing gives the focus map in µm but --focus-units slices asks for slices; "
            "drop one of them."
        )
    if options.focus_channel is not None and options.channel_mode == "separate":
        raise InputError(
            "--focus-channel applies to the combined channel mode only; in the separate mode "
            "every channel decides for itself."
        )
    if getattr(options, "coverage", None) and not options.align:
        raise InputError(
            "--coverage writes the region that every aligned plane covers, so it needs --align "
            "translation or similarity."
        )


def run_fuse(args: argparse.Namespace) -> int:
    """Fuse one stack into the files named; raises PdmFuseError on bad input."""
    args.scheduler = args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
    check_options(args)
    written = fuse_to_files(
        args.inputs,
        args.output,
        focus_map=args.focus_map,
        confidence=args.confidence,
        coverage=args.coverage,
        options=args,
    )
    if not args.quiet:
        names = ", ".join(str(p) for p in written.paths)
        print(
            f"pdmfuse: fused {written.description} with {args.method} in "
            f"{written.seconds:.1f} s → {names}",
            file=sys.stderr,
        )
    return EXIT_OK


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    if issubclass(category, PdmFuseWarning):
        from tqdm import tqdm

        tqdm.write(f"pdmfuse: warning: {message}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


@contextmanager
def _cli_signals() -> Iterator[None]:
    """Turn SIGTERM into :class:`Terminated` while the command runs (main thread only)."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except (ValueError, OSError, AttributeError):  # not the main thread, or no SIGTERM
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pdmfuse``; returns the exit status instead of exiting, for tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    with warnings.catch_warnings(), _cli_signals():
        warnings.showwarning = _show_warning
        try:
            return args.handler(args)
        except PdmFuseError as exc:
            print(f"pdmfuse: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print("pdmfuse: interrupted; nothing was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Terminated:
            print("pdmfuse: terminated; nothing was written.", file=sys.stderr)
            return EXIT_TERMINATED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
