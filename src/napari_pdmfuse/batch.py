"""``pdmfuse batch``: fuse many stacks into one folder, carrying on past the ones that fail.

Each INPUT is one stack (a multi-page TIFF or a folder of planes); its results are
``<stem>_fused.tif`` (and ``<stem>_focus.tif``, ``<stem>_confidence.tif`` when asked) in
``--out-dir``. A stack that fails is reported on stderr at once and again in the summary, and the
command exits non-zero at the end; the stacks fused before and after it are kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError, PdmFuseError

#: Suffixes removed from a file's name to make its stem, longest first.
STACK_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif")

OUTPUT_SUFFIXES = {
    "fused": "_fused.tif",
    "focus": "_focus.tif",
    "confidence": "_confidence.tif",
    "coverage": "_coverage.tif",
}


def add_batch_parser(
    commands: Any,
    add_fusion_options: Callable[[argparse.ArgumentParser], None],
    formatter: type[argparse.HelpFormatter],
) -> None:
    from .cli import INPUT_HELP

    batch = commands.add_parser(
        "batch",
        help="fuse many stacks into one folder, carrying on past the ones that fail",
        description=(
            f"Fuse each INPUT, {INPUT_HELP}, into OUT_DIR/<stem>_fused.tif (with "
            "<stem>_focus.tif, <stem>_confidence.tif and <stem>_coverage.tif when asked); "
            "time points and channels are kept as in 'pdmfuse fuse'. A stack that cannot be "
            "fused is reported and skipped; the command exits with status 2 at the end if any "
            "failed, after a summary. Each stack's files appear together or not at all."
        ),
        formatter_class=formatter,
    )
    batch.add_argument("inputs", nargs="+", metavar="INPUT", help="stack files or plane folders")
    batch.add_argument(
        "--out-dir",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder for the results (created if missing; not an input folder)",
    )
    batch.add_argument(
        "--focus-map", action="store_true", help="also write <stem>_focus.tif (float32)"
    )
    batch.add_argument(
        "--confidence", action="store_true", help="also write <stem>_confidence.tif (float32)"
    )
    batch.add_argument(
        "--coverage",
        action="store_true",
        help="with --align, also write <stem>_coverage.tif (uint8, 255 where every plane saw "
        "the pixel)",
    )
    add_fusion_options(batch)
    batch.set_defaults(handler=run_batch)


def stem(path: Path) -> str:
    """Output stem of an input: a file's name without its TIFF suffix, or a folder's name."""
    name = path.name or path.resolve().name
    if path.is_dir():
        return name
    lower = name.lower()
    for suffix in STACK_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return Path(name).stem or name


@dataclass(frozen=True)
class Failure:
    input: Path
    reason: str


def _targets(inputs: list[Path], out_dir: Path) -> dict[Path, str]:
    """Stem of each input, refusing inputs given twice or whose results would share names."""
    seen: dict[Path, Path] = {}
    stems: dict[str, Path] = {}
    result: dict[Path, str] = {}
    for path in inputs:
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path} is given twice; list each stack once.")
        seen[key] = path
        name = stem(path)
        if name.lower() in stems:
            raise InputError(
                f"{stems[name.lower()]} and {path} would both be written to "
                f"{out_dir / (name + OUTPUT_SUFFIXES['fused'])}; rename one of them or fuse them "
                "into different folders."
            )
        stems[name.lower()] = path
        result[path] = name
    return result


def _out_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"The output folder {folder} is a file; give a folder with --out-dir.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {folder} ({exc.strerror}); check the path and its "
            "permissions."
        ) from None


def run_batch(args: argparse.Namespace) -> int:
    """Fuse every input; returns 0 when all were fused, else 2 (1 if one failed on a bug)."""
    from .cli import (
        EXIT_ERROR,
        EXIT_FAILED,
        EXIT_INTERRUPTED,
        EXIT_OK,
        EXIT_TERMINATED,
        Terminated,
        check_options,
        fuse_to_files,
    )

    inputs = [Path(p) for p in args.inputs]
    out_dir: Path = args.out_dir
    check_options(args)
    stems = _targets(inputs, out_dir)
    _out_dir(out_dir)
    fused_count = 0
    failures: list[Failure] = []
    unexpected = False
    for number, path in enumerate(inputs, 1):
        name = stems[path]
        outputs = {kind: out_dir / f"{name}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}
        try:
            written = fuse_to_files(
                [path],
                outputs["fused"],
                focus_map=outputs["focus"] if args.focus_map else None,
                confidence=outputs["confidence"] if args.confidence else None,
                coverage=outputs["coverage"] if args.coverage else None,
                options=args,
                keep=inputs,
                label=f"{number}/{len(inputs)} {name}",
            )
        except PdmFuseError as exc:
            failures.append(Failure(path, str(exc)))
            print(f"pdmfuse: error: {exc}", file=sys.stderr)
            continue
        except (KeyboardInterrupt, Terminated) as stop:
            print(
                f"pdmfuse: {'interrupted' if isinstance(stop, KeyboardInterrupt) else 'terminated'}"
                f" at {path} after {fused_count} of {len(inputs)} stacks were fused; nothing was "
                f"written for {path}.",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
        except Exception as exc:  # a bug: report it, keep the other stacks going
            unexpected = True
            reason = f"unexpected {type(exc).__name__}: {exc}; please report this as a bug."
            failures.append(Failure(path, reason))
            print(f"pdmfuse: error: {path}: {reason}", file=sys.stderr)
            continue
        fused_count += 1
        if not args.quiet:
            names = ", ".join(str(p) for p in written.paths)
            print(f"pdmfuse: fused {path} in {written.seconds:.1f} s → {names}", file=sys.stderr)
    if not failures:
        if not args.quiet:
            print(f"pdmfuse: batch done: {fused_count} fused, 0 failed.", file=sys.stderr)
        return EXIT_OK
    print(
        f"pdmfuse: batch done: {fused_count} fused, {len(failures)} failed:",
        file=sys.stderr,
    )
    for failure in failures:
        named = str(failure.input) in failure.reason
        reason = failure.reason if named else f"{failure.input}: {failure.reason}"
        print(f"pdmfuse:   - {reason}", file=sys.stderr)
    return EXIT_FAILED if unexpected else EXIT_ERROR
