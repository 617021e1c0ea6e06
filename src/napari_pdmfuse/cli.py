"""``pdmfuse``: fuse focus stacks from the command line, for batches and headless machines.

The command reads lazily, checks every output (and the free disk space) before fusing, drives a
progress bar from the fusion plan and streams tiles into temporary TIFFs that are moved into
place only when complete, so a failed or interrupted run never leaves partial files and results
larger than memory can be written. Errors a user can fix are one line on stderr and exit
status 2; ``pdmfuse batch`` fuses many stacks and carries on past the bad ones.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from .errors import PdmFuseError, PdmFuseWarning
from .methods import DEFAULT_METHOD, METHODS

EXIT_OK = 0
EXIT_FAILED = 1  # batch: a stack failed for a reason that is not the input's (a bug)
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DEVICES = ("auto", "cpu", "cuda")


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
        "method's context: 16 px for argmax, 160 px for wavelet and pyramid, 144 px for pdmnet)",
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
        help="all-in-focus image to write, with the input's data type and colour",
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


def describe_inputs(inputs: Sequence[Path]) -> str:
    return str(inputs[0]) if len(inputs) == 1 else f"{inputs[0]} … {inputs[-1]}"


def _naming(exc: PdmFuseError, source: str) -> PdmFuseError:
    """The same error, its message prefixed with the input's name unless it names a file."""
    message = str(exc)
    if source in message:
        return exc
    return type(exc)(f"{source}: {message}")


def fuse_to_files(
    inputs: Sequence[Path],
    fused: Path,
    *,
    focus_map: Path | None,
    confidence: Path | None,
    options: argparse.Namespace,
    keep: Sequence[Path] = (),
    label: str = "pdmfuse",
) -> Written:
    """Read, check, fuse tile by tile into temporary TIFFs, and move them into place.

    ``keep`` lists further files that must never be written over (the other inputs of a batch).
    Raises PdmFuseError, its message naming the input, for anything the user can fix.
    """
    from tqdm import tqdm

    from .fusion import plan
    from .io import read_stack
    from .writing import Scale, TiffSink, atomic_files, check_outputs, check_space

    started = time.perf_counter()
    outputs = [fused, focus_map, confidence]
    raw = [Path(p) for p in inputs]
    # Refuse clashing outputs before even opening the inputs, then again against every file read.
    check_outputs(outputs, [*raw, *keep], overwrite=options.overwrite)
    stack = read_stack(raw)
    protected = [*raw, *keep, *stack.sources]
    paths = check_outputs(outputs, protected, overwrite=options.overwrite)
    source = describe_inputs(raw)
    try:
        job = plan(
            stack.data,
            method=options.method,
            rgb=stack.rgb,
            channel_axis=stack.channel_axis,
            tile=options.tile,
            device=options.device,
            weights=options.weights,
        )
        maps = {"focus_map": focus_map is not None, "confidence": confidence is not None}
        check_space(job.stack, paths, **maps)
        with atomic_files(paths) as temps:
            named = dict(zip(["fused", *(k for k, v in maps.items() if v)], temps, strict=True))
            sink = TiffSink(
                job.stack,
                named["fused"],
                focus_map=named.get("focus_map"),
                confidence=named.get("confidence"),
                scale=Scale(stack.pixel_size, stack.unit),
            )
            bar = tqdm(
                desc=label,
                total=job.n_tiles,
                unit="tile",
                file=sys.stderr,
                disable=options.quiet,
                dynamic_ncols=True,
            )
            try:
                for progress in job.run(sink):
                    bar.update(progress.done - bar.n)
                sink.close()
            finally:
                bar.close()
                sink.close(flush=False)
    except PdmFuseError as exc:
        raise _naming(exc, source) from None
    return Written(tuple(stack.data.shape), paths, time.perf_counter() - started)


def check_options(options: argparse.Namespace) -> None:
    """Refuse a bad method, device, weights file or tile size before any input is read."""
    from .limits import check_tile
    from .methods import get_method

    method = get_method(options.method, device=options.device, weights=options.weights)
    if options.tile is not None:
        check_tile(options.tile, method.name, method.halo, method.align)


def run_fuse(args: argparse.Namespace) -> int:
    """Fuse one stack into the files named; raises PdmFuseError on bad input."""
    check_options(args)
    written = fuse_to_files(
        args.inputs,
        args.output,
        focus_map=args.focus_map,
        confidence=args.confidence,
        options=args,
    )
    if not args.quiet:
        z, y, x = written.shape[:3]
        names = ", ".join(str(p) for p in written.paths)
        print(
            f"pdmfuse: fused {z} planes of {y}×{x} with {args.method} in "
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
