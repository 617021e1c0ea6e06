"""``pdmfuse``: fuse focus stacks from the command line, for batches and headless machines.

The command reads lazily, checks every output before fusing, drives a progress bar from
:func:`napari_pdmfuse.fuse_iter` and writes all outputs atomically, so a failed or interrupted
run never leaves partial files. Errors a user can fix are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .errors import InputError, PdmFuseError
from .methods import DEFAULT_METHOD, METHODS

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130

DEVICES = ("auto", "cpu", "cuda")


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


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="pdmfuse",
        description=(
            "Fuse a microscopy focus stack (z-stack) into one all-in-focus image, with a focus "
            "map (which plane is in focus where) and a confidence map."
        ),
        epilog="Run 'pdmfuse fuse --help' for the options of fusing.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fuse = commands.add_parser(
        "fuse",
        help="fuse a focus stack into an all-in-focus TIFF",
        description=(
            "Fuse a focus stack into one all-in-focus image. INPUT is a multi-page TIFF (its Z "
            "axis, or its pages, are the focal planes), a folder of plane images (.tif .tiff "
            ".png .jpg .jpeg .bmp, in natural name order: z2 before z10), or two or more plane "
            "files, taken in the order given (a shell glob sorts z10 before z2: pass the folder "
            "instead). Outputs are TIFFs; nothing is written if anything fails."
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
    fuse.add_argument(
        "--method",
        choices=METHODS,
        default=DEFAULT_METHOD,
        help="fusion method: pdmnet (neural network), wavelet, pyramid (Laplacian pyramid) or "
        "argmax (sharpest plane per pixel, the naive reference)",
    )
    fuse.add_argument(
        "--device",
        choices=DEVICES,
        default="auto",
        help="where pdmnet runs: auto uses a CUDA GPU when one is available",
    )
    fuse.add_argument(
        "--tile",
        type=_positive_int,
        metavar="N",
        default=None,
        help="tile size in pixels, to bound memory (default: sized automatically)",
    )
    fuse.add_argument(
        "--overwrite", action="store_true", help="replace output files that already exist"
    )
    fuse.add_argument(
        "-q", "--quiet", action="store_true", help="print no progress bar and no summary"
    )
    fuse.set_defaults(handler=run_fuse)
    return parser


def run_fuse(args: argparse.Namespace) -> int:
    """Read, check outputs, fuse with a progress bar, write; raises PdmFuseError on bad input."""
    from tqdm import tqdm

    from .fusion import fuse_iter
    from .io import read_stack
    from .writing import Scale, check_outputs, write_outputs

    started = time.perf_counter()
    outputs = [args.output, args.focus_map, args.confidence]
    raw_inputs = [Path(p) for p in args.inputs]
    # Refuse clashing outputs before even opening the inputs, then again against every file read.
    check_outputs(outputs, raw_inputs, overwrite=args.overwrite)
    stack = read_stack(raw_inputs)
    check_outputs(outputs, [*raw_inputs, *stack.sources], overwrite=args.overwrite)

    gen = fuse_iter(
        stack.data,
        method=args.method,
        rgb=stack.rgb,
        channel_axis=stack.channel_axis,
        tile=args.tile,
        device=args.device,
    )
    bar = None
    try:
        while True:
            try:
                progress = next(gen)
            except StopIteration as stop:
                result = stop.value
                break
            if bar is None:  # the first Progress brings the number of tiles
                bar = tqdm(
                    desc="pdmfuse",
                    total=progress.total,
                    unit="tile",
                    file=sys.stderr,
                    disable=args.quiet,
                    dynamic_ncols=True,
                )
            bar.update(progress.done - bar.n)
    finally:
        if bar is not None:
            bar.close()
    if result is None:  # pragma: no cover - fuse_iter always returns a result
        raise InputError("The fusion produced no result; report this as a bug.")

    written = write_outputs(
        result,
        args.output,
        focus_map=args.focus_map,
        confidence=args.confidence,
        rgb=stack.rgb,
        scale=Scale(stack.pixel_size, stack.unit),
        inputs=[*raw_inputs, *stack.sources],
        overwrite=args.overwrite,
    )
    if not args.quiet:
        z, y, x = stack.data.shape[:3]
        seconds = time.perf_counter() - started
        names = ", ".join(str(p) for p in written)
        print(
            f"pdmfuse: fused {z} planes of {y}×{x} with {args.method} in {seconds:.1f} s → {names}",
            file=sys.stderr,
        )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pdmfuse``; returns the exit status instead of exiting, for tests."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        return args.handler(args)
    except PdmFuseError as exc:
        print(f"pdmfuse: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("pdmfuse: interrupted; nothing was written.", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
