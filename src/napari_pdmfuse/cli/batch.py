"""``pdmfuse batch``: fuse many stacks into one folder, carrying on past the ones that fail.

Each INPUT is one stack (a TIFF, an OME-Zarr or a folder of planes); its results are
``<stem>_fused.tif`` (and ``<stem>_focus.tif``, ``<stem>_confidence.tif``,
``<stem>_coverage.tif`` when asked) in ``--out-dir``. A stack that fails is reported on stderr at
once and again in the summary, and the command exits non-zero at the end; the stacks fused
before and after it are kept. With a cluster, every stack's tiles are spread over its workers,
and one progress bar counts the tiles of the whole batch.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    InputError,
    OutputError,
    PdmFuseError,
    Terminated,
    printable,
)
from ..files import Outputs, fuse_files_iter
from ..planning import checked_method
from ..reading.image import stem
from .arguments import fuse_options, scheduler_address
from .fuse import connected
from .progress import progress_bar, say

OUTPUT_SUFFIXES = {
    "fused": "_fused.tif",
    "focus": "_focus.tif",
    "confidence": "_confidence.tif",
    "coverage": "_coverage.tif",
}


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
    inputs = [Path(p) for p in args.inputs]
    out_dir: Path = args.out_dir
    options = fuse_options(args)
    checked_method(options)
    stems = _targets(inputs, out_dir)
    _out_dir(out_dir)
    fused_count = 0
    failures: list[Failure] = []
    unexpected = False
    client = connected(scheduler_address(args))
    bar = None  # opened at the first tile, so that refusals print no bar
    done_before = 0
    try:
        for number, path in enumerate(inputs, 1):
            name = stems[path]
            named = {kind: out_dir / f"{name}{suffix}" for kind, suffix in OUTPUT_SUFFIXES.items()}
            outputs = Outputs(
                named["fused"],
                named["focus"] if args.focus_map else None,
                named["confidence"] if args.confidence else None,
                named["coverage"] if args.coverage else None,
            )
            steps = fuse_files_iter(
                [path],
                outputs,
                options,
                axes=args.axes,
                overwrite=args.overwrite,
                client=client,
                keep=inputs,
            )
            try:
                while True:
                    try:
                        step = next(steps)
                    except StopIteration as stop:
                        written = stop.value
                        break
                    if bar is None:
                        bar = progress_bar("pdmfuse batch", None, args.quiet)
                    if step.done == 0:
                        bar.set_description(f"{number}/{len(inputs)} {printable(name)}")
                        bar.total = done_before + step.total * (len(inputs) - number + 1)
                        bar.refresh()
                    bar.update(done_before + step.done - bar.n)
                done_before += step.total
            except PdmFuseError as exc:
                failures.append(Failure(path, str(exc)))
                say(f"error: {exc}")
                done_before = bar.n if bar is not None else done_before
                continue
            except (KeyboardInterrupt, Terminated) as stop:
                what = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated"
                say(
                    f"{what} at {path} after {fused_count} of {len(inputs)} stacks were fused; "
                    f"nothing was written for {path}."
                )
                return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
            except Exception as exc:  # a bug: report it, keep the other stacks going
                unexpected = True
                reason = f"unexpected {type(exc).__name__}: {exc}; please report this as a bug."
                failures.append(Failure(path, reason))
                say(f"error: {path}: {reason}")
                continue
            finally:
                steps.close()  # this stack's temporary files go before the next starts
            fused_count += 1
            if not args.quiet:
                names = ", ".join(str(p) for p in written.paths)
                say(f"fused {path} in {written.seconds:.1f} s → {names}")
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    if not failures:
        if not args.quiet:
            say(f"batch done: {fused_count} fused, 0 failed.")
        return EXIT_OK
    say(f"batch done: {fused_count} fused, {len(failures)} failed:")
    for failure in failures:
        named_input = str(failure.input) in failure.reason
        reason = failure.reason if named_input else f"{failure.input}: {failure.reason}"
        print(f"pdmfuse:   - {printable(reason)}", file=sys.stderr)
    return EXIT_FAILED if unexpected else EXIT_ERROR
