"""The ``pdmfuse`` command's arguments: what each option means, and the options they make.

Every choice list comes from :mod:`napari_pdmfuse.options`, and :func:`fuse_options` turns the
parsed arguments into the one :class:`~napari_pdmfuse.options.FuseOptions` the job takes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..methods import DEFAULT_METHOD, DEFAULT_SELECTION, METHODS, SELECTIONS
from ..options import ALIGN_MODELS, CHANNEL_MODES, DEVICES, FOCUS_UNITS, FuseOptions
from ..writing import DEFAULT_NGFF_VERSION, NGFF_VERSIONS


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


def _positive_int(text: str, unit: str = "pixels") -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of {unit}")
    return value


def _plane_count(text: str) -> int:
    value = _positive_int(text, "planes")
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} plane is no stack; give 2 or more")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show a default only where there is one worth reading (not None, not a flag's False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


INPUT_HELP = (
    "a multi-page TIFF (its Z axis, or its pages, are the focal planes), an OME-TIFF or ImageJ "
    "hyperstack, an OME-Zarr store (also at an http(s):// or s3:// address), a CZI, ND2 or LIF "
    "file (with the formats extra), a folder of plane images (.tif .tiff .png .jpg .jpeg .bmp, "
    "in natural name order: z2 before z10)"
)


def _add_fusion_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scene",
        action="append",
        metavar="NAME|N",
        help="of a file holding several images (CZI scenes, ND2 positions, LIF series, "
        "multi-series OME-TIFF, OME-Zarr collection), fuse this one, by its name or number "
        "(from 0); repeat for more (default: every scene, each into outputs named after it)",
    )
    parser.add_argument(
        "--method",
        type=_choice("method", METHODS),
        metavar="{" + ",".join(METHODS) + "}",
        default=DEFAULT_METHOD,
        help="fusion method: pdmnet (neural network), wavelet, pyramid (Laplacian pyramid) or "
        "argmax (sharpest plane per pixel, the naive reference)",
    )
    parser.add_argument(
        "--selection",
        type=_choice("selection", SELECTIONS),
        metavar="{" + ",".join(SELECTIONS) + "}",
        default=DEFAULT_SELECTION,
        help="how pdmnet makes a pixel: blend (its slices weighted) or hard (copied from the "
        "slice of highest weight, so every value is one the stack holds)",
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
        "'python -m napari_pdmfuse.training'; read as plain tensors only, and checked against the "
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
    from ..version import __version__

    parser = argparse.ArgumentParser(
        prog="pdmfuse",
        description=(
            "Fuse a microscopy focus stack (z-stack) into one all-in-focus image, with a focus "
            "map (which plane is in focus where) and a confidence map."
        ),
        epilog="Run 'pdmfuse fuse --help', 'pdmfuse batch --help' or 'pdmfuse watch --help' for "
        "their options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fuse = commands.add_parser(
        "fuse",
        help="fuse a focus stack (or a time-lapse, or channels) into an all-in-focus image",
        description=(
            f"Fuse a focus stack into one all-in-focus image. INPUT is {INPUT_HELP}, or two or "
            "more plane files, taken in the order given (a shell glob sorts z10 before z2: pass "
            "the folder instead). Outputs are TIFF, OME-TIFF or OME-Zarr, by their names; "
            "nothing is written if anything fails. A file holding several scenes (positions, "
            "series) has each fused on its own into outputs named after it, FUSED_<scene>.tif "
            "(MAP_<scene>.tif, …); one scene picked with --scene keeps the names given. An "
            "OME-Zarr HCS plate fused into outputs named .ome.zarr gives plates of the same "
            "layout, every field fused into its place."
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
        "OME-TIFF with a pyramid) or .ome.zarr (OME-Zarr with a pyramid)",
    )
    fuse.add_argument(
        "--focus-map",
        type=Path,
        metavar="MAP.tif",
        help="also write the focus map: float32, where each pixel is in focus: the plane index "
        "(0 = first, fractional between planes), or µm from the first plane with --focus-units "
        "um",
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
        "--retouch",
        type=Path,
        metavar="MASK.tif",
        help="a retouch mask the size of the result, as the widget saves it (or napari saves "
        "a Labels layer): 0 keeps the fusion, k takes plane k (1 = first), labels above the "
        "plane count take the other fusions the mask's metadata names",
    )
    fuse.add_argument(
        "--mesh",
        type=Path,
        metavar="MODEL.glb",
        help="also write a 3-D model: the focus map as a relief textured with the fused image, "
        "in µm when the file records its pixel size and Z step; .glb (glTF), .ply (PLY, "
        "texture beside it as .png) or .stl (a solid for 3-D printing)",
    )
    fuse.add_argument(
        "--ome-zarr-version",
        type=_choice("version of OME-Zarr", NGFF_VERSIONS),
        metavar="{" + ",".join(NGFF_VERSIONS) + "}",
        default=DEFAULT_NGFF_VERSION,
        help="OME-Zarr version of .ome.zarr outputs: 0.5 (zarr format 3) or 0.4 (zarr format "
        "2, for readers that predate format 3)",
    )
    fuse.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="fuse on this dask.distributed cluster, one task per tile (default: the "
        "DASK_SCHEDULER_ADDRESS environment variable, else this machine); workers need "
        "napari-pdmfuse and the input files at the same paths",
    )
    _add_fusion_options(fuse)
    fuse.set_defaults(command="fuse")
    add_batch_parser(commands)
    add_watch_parser(commands)
    return parser


def add_batch_parser(commands: Any) -> None:
    batch = commands.add_parser(
        "batch",
        help="fuse many stacks into one folder, carrying on past the ones that fail",
        description=(
            f"Fuse each INPUT, {INPUT_HELP}, into OUT_DIR/<stem>_fused.tif (with "
            "<stem>_focus.tif, <stem>_confidence.tif and <stem>_coverage.tif when asked; "
            "each scene of a file holding several into <stem>_<scene>_fused.tif, …); "
            "time points and channels are kept as in 'pdmfuse fuse'. A stack that cannot be "
            "fused is reported and skipped; the command exits with status 2 at the end if any "
            "failed, after a summary. Each stack's files appear together or not at all. "
            "Without --overwrite a rerun resumes: a stack whose outputs exist, made with the same "
            "options and weights (as they record), is kept as it is; one with outputs missing is "
            "fused again; one made with other options is refused."
        ),
        formatter_class=_HelpFormatter,
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="stack files or plane folders")
    _add_folder_outputs(batch)
    _add_fusion_options(batch)
    batch.set_defaults(command="batch")


def _add_folder_outputs(parser: argparse.ArgumentParser) -> None:
    """The outputs of commands that fuse many stacks into one folder (batch, watch)."""
    parser.add_argument(
        "--out-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for the results (created if missing; not an input folder)",
    )
    parser.add_argument(
        "--focus-map", action="store_true", help="also write <stem>_focus.tif (float32)"
    )
    parser.add_argument(
        "--confidence", action="store_true", help="also write <stem>_confidence.tif (float32)"
    )
    parser.add_argument(
        "--coverage",
        action="store_true",
        help="with --align, also write <stem>_coverage.tif (uint8, 255 where every plane saw "
        "the pixel)",
    )
    parser.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="fuse on this dask.distributed cluster, every stack's tiles spread over its workers "
        "(default: the DASK_SCHEDULER_ADDRESS environment variable, else this machine)",
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="REPORT.html",
        help="also write a report to look the stacks over: a self-contained HTML page with a "
        "row per stack (thumbnails of the fused image and focus map, focus range in planes and "
        "µm, share of low-confidence area, warnings, time and throughput, or its error), and "
        "the same rows in REPORT.csv beside it",
    )


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def add_watch_parser(commands: Any) -> None:
    watch = commands.add_parser(
        "watch",
        help="fuse each stack as it lands in a folder, once its writer has finished",
        description=(
            "Watch FOLDER and fuse each stack that appears in it (a TIFF, OME-TIFF, OME-Zarr, "
            "CZI, ND2 or LIF file; with --planes, a folder of plane images) into OUT_DIR, named "
            "as by 'pdmfuse batch', once it is complete: its size and time unchanged for "
            "--stable seconds and the whole of it readable (a folder: --planes images). A stack "
            "that changes again is fused again. Stacks already fused with the same options are "
            "kept, so a restart picks up where the last run stopped. Ctrl-C (or SIGTERM) stops "
            "the watch; a stack being fused then is left unwritten, to be fused at the next "
            "start. Exits 0 when nothing failed, else 2, after a summary."
        ),
        formatter_class=_HelpFormatter,
    )
    watch.add_argument("folder", type=Path, metavar="FOLDER", help="the folder stacks land in")
    _add_folder_outputs(watch)
    watch.add_argument(
        "--planes",
        type=_plane_count,
        metavar="N",
        help="also fuse sub-folders of plane images, each once it holds N planes (without it, "
        "sub-folders other than .zarr stores are left alone)",
    )
    watch.add_argument(
        "--stable",
        type=_seconds,
        metavar="S",
        default=10.0,
        help="seconds a stack must stay unchanged (size and modification time) before it is "
        "taken as complete; longer than the writer's longest pause",
    )
    watch.add_argument(
        "--interval",
        type=_seconds,
        metavar="S",
        default=2.0,
        help="seconds between looks at the folder",
    )
    watch.add_argument(
        "--idle-exit",
        type=_seconds,
        metavar="S",
        help="end once nothing has changed in the folder, and nothing is left to fuse, for S "
        "seconds (default: watch until stopped)",
    )
    _add_fusion_options(watch)
    watch.set_defaults(command="watch")


def fuse_options(args: argparse.Namespace) -> FuseOptions:
    """The fusion options the arguments ask for, checked once."""
    weights = None if args.weights is None else str(args.weights)
    return FuseOptions.from_values({**vars(args), "weights": weights})


def scheduler_address(args: argparse.Namespace) -> str | None:
    """The cluster to fuse on: --scheduler, else DASK_SCHEDULER_ADDRESS, else none."""
    import os

    return args.scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS") or None
