"""``pdmfuse batch``: fuse many stacks into one folder, carrying on past the ones that fail.

Each INPUT is one stack (a TIFF, an OME-Zarr or a folder of planes); its results are
``<stem>_fused.tif`` (and ``<stem>_focus.tif``, ``<stem>_confidence.tif``,
``<stem>_coverage.tif`` when asked) in ``--out-dir``. A stack that fails is reported on stderr at
once and again in the summary, and the command exits non-zero at the end; the stacks fused
before and after it are kept. Without ``--overwrite`` a rerun resumes: stacks whose outputs
exist, made with the same options, are kept as they are (see :mod:`napari_pdmfuse.resume`).
With a cluster, every stack's tiles are spread over its workers, and one progress bar counts
the tiles of the whole batch.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    InputError,
    OutputError,
    PdmFuseError,
    PdmFuseWarning,
    Terminated,
    printable,
)
from ..files import Outputs, Written, fuse_files_iter
from ..options import FuseOptions
from ..planning import checked_method
from ..reading import Scene, list_scenes, pick_scenes
from ..reading.image import stem
from .arguments import fuse_options, scheduler_address
from .fuse import connected
from .progress import progress_bar, say
from .report import check_report, report_csv, write_report

OUTPUT_SUFFIXES = {
    "fused": "_fused.tif",
    "focus": "_focus.tif",
    "confidence": "_confidence.tif",
    "coverage": "_coverage.tif",
}


@dataclass(frozen=True)
class Stack:
    """One stack of a batch: its input, which scene of it (of a file holding several; None
    for a file's only one), the stem its outputs are named with, and why it cannot be fused
    when that is known before (a scene the file does not have)."""

    input: Path
    name: str
    scene: Scene | None = None
    refusal: str | None = None

    def describe(self) -> str:
        return str(self.input) + ("" if self.scene is None else f" ({self.scene.describe()})")


@dataclass
class Outcome:
    """What became of one stack: fused, kept (fused before, resumed) or failed."""

    stack: Stack
    written: Written | None = None
    error: str | None = None
    bug: bool = False  # failed on an unexpected error, not on its input
    warnings: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.written is None:
            return "failed"
        return "kept" if self.written.skipped else "fused"


def stacks_of(inputs: list[Path], out_dir: Path, wanted: list[str] | None = None) -> list[Stack]:
    """A stack per input, or per scene of an input holding several (those ``wanted``, by name
    or number, else all), refusing inputs given twice or whose results would share names."""
    seen: dict[Path, Path] = {}
    stems: dict[str, Path] = {}
    result = []
    for path in inputs:
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path} is given twice; list each stack once.")
        seen[key] = path
        for stack in scene_stacks(path, wanted or []):
            if stack.name.lower() in stems:
                raise InputError(
                    f"{stems[stack.name.lower()]} and {path} would both be written to "
                    f"{out_dir / (stack.name + OUTPUT_SUFFIXES['fused'])}; rename one of them "
                    "or fuse them into different folders."
                )
            stems[stack.name.lower()] = path
            result.append(stack)
    return result


def scene_stacks(path: Path, wanted: list[str]) -> list[Stack]:
    """The stacks of one input: one, or one per scene (named ``<stem>_<scene>``) of a file
    holding several. An input that cannot be read is one stack, whose fusion says why."""
    try:
        scenes = list_scenes([path])
    except PdmFuseError:
        return [Stack(path, stem(path))]
    try:
        picked = pick_scenes(scenes, wanted, path)
    except InputError as exc:
        return [Stack(path, stem(path), refusal=str(exc))]
    if len(scenes) == 1:
        return [Stack(path, stem(path))]
    return [Stack(path, f"{stem(path)}_{scene.label}", scene) for scene in picked]


def make_out_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"The output folder {folder} is a file; give a folder with --out-dir.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {folder} ({exc.strerror}); check the path and its "
            "permissions."
        ) from None


class BatchRun:
    """Fuses stacks one after the other into ``args.out_dir``, with one progress bar over
    their tiles, and keeps what became of each (:class:`Outcome`); shared by ``batch`` and
    ``watch``."""

    def __init__(self, args: argparse.Namespace, options: FuseOptions) -> None:
        self.args, self.options = args, options
        self.outcomes: list[Outcome] = []
        self.client = connected(scheduler_address(args))
        self.bar: Any = None  # opened at the first tile, so that refusals print no bar
        self.done_before = 0  # tiles of the stacks before this one

    def outputs(self, stack: Stack) -> Outputs:
        args = self.args
        named = {k: args.out_dir / f"{stack.name}{s}" for k, s in OUTPUT_SUFFIXES.items()}
        return Outputs(
            named["fused"],
            named["focus"] if args.focus_map else None,
            named["confidence"] if args.confidence else None,
            named["coverage"] if args.coverage else None,
        )

    def fuse(self, stack: Stack, label: str, after: int, keep: list[Path]) -> Outcome:
        """Fuse one stack (``label`` shown on the bar; ``after`` stacks still to come after
        this one, for the bar's total); a failure is reported and kept, not raised."""
        outcome = Outcome(stack)
        self.outcomes.append(outcome)
        if stack.refusal is not None:
            outcome.error = stack.refusal
            say(f"error: {stack.refusal}")
            return outcome
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", PdmFuseWarning)  # each stack's, for the report
                self._fuse(outcome, label, after, keep)
        finally:
            for warning in caught:  # shown as they would have been, once the stack is done
                if issubclass(warning.category, PdmFuseWarning):
                    outcome.warnings.append(str(warning.message))
                warnings.showwarning(
                    warning.message, warning.category, warning.filename, warning.lineno
                )
        if self.args.quiet or outcome.written is None:
            return outcome
        if outcome.written.skipped:
            say(f"kept {stack.describe()}: its outputs exist, made with the same options")
        else:
            names = ", ".join(str(p) for p in outcome.written.paths)
            say(f"fused {stack.describe()} in {outcome.written.seconds:.1f} s → {names}")
        return outcome

    def _fuse(self, outcome: Outcome, label: str, after: int, keep: list[Path]) -> None:
        stack = outcome.stack
        steps = fuse_files_iter(
            [stack.input],
            self.outputs(stack),
            self.options,
            axes=self.args.axes,
            overwrite=self.args.overwrite,
            client=self.client,
            keep=keep,
            resume=True,
            overview=getattr(self.args, "report", None) is not None,
            scene=0 if stack.scene is None else stack.scene.index,
        )
        total = 0
        try:
            while True:
                try:
                    step = next(steps)
                except StopIteration as stop:
                    outcome.written = stop.value
                    break
                total = step.total
                self._advance(step.done, total, label, after)
            self.done_before += total
        except PdmFuseError as exc:
            outcome.error = str(exc)
            say(f"error: {exc}")
        except Exception as exc:  # a bug: report it, keep the other stacks going
            outcome.error = f"unexpected {type(exc).__name__}: {exc}; please report this as a bug."
            outcome.bug = True
            say(f"error: {stack.input}: {outcome.error}")
        finally:
            steps.close()  # this stack's temporary files go before the next starts
            if outcome.status == "failed" and self.bar is not None:
                self.done_before = self.bar.n

    def _advance(self, done: int, total: int, label: str, after: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(f"pdmfuse {self.args.command}", None, self.args.quiet)
        if done == 0:  # a new stack: the total guesses the rest are as large
            self.bar.set_description(printable(label))
            self.bar.total = self.done_before + total * (after + 1)
            self.bar.refresh()
        self.bar.update(self.done_before + done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.client is not None:
            self.client.close()

    def counts(self) -> str:
        """E.g. "3 fused, 2 failed" (with "1 kept" when a rerun kept some)."""
        statuses = [o.status for o in self.outcomes]
        kept = statuses.count("kept")
        words = [f"{statuses.count('fused')} fused"] + ([f"{kept} kept"] if kept else [])
        return ", ".join([*words, f"{statuses.count('failed')} failed"])

    def summary(self, what: str) -> int:
        """Print the summary; the exit status: 0 when nothing failed, else 2 (1 on a bug)."""
        failures = [o for o in self.outcomes if o.status == "failed"]
        if not failures:
            if not self.args.quiet:
                say(f"{what} done: {self.counts()}.")
            return EXIT_OK
        say(f"{what} done: {self.counts()}:")
        for failure in failures:
            reason = str(failure.error)
            named_input = str(failure.stack.input) in reason
            reason = reason if named_input else f"{failure.stack.describe()}: {reason}"
            print(f"pdmfuse:   - {printable(reason)}", file=sys.stderr)
        return EXIT_FAILED if any(o.bug for o in failures) else EXIT_ERROR


def stopped(stop: BaseException, where: str, done: int, total: int | None) -> int:
    """Say where Ctrl-C or a stop signal ended the run; its exit status."""
    interrupted = isinstance(stop, KeyboardInterrupt)
    of = "" if total is None else f" of {total}"
    say(
        f"{'interrupted' if interrupted else 'terminated'} at {where} after {done}{of} stacks "
        f"were fused; nothing was written for {where}."
    )
    return EXIT_INTERRUPTED if interrupted else EXIT_TERMINATED


def run_batch(args: argparse.Namespace) -> int:
    """Fuse every input; returns 0 when all were fused (or kept), else 2 (1 on a bug)."""
    inputs = [Path(p) for p in args.inputs]
    options = fuse_options(args)
    checked_method(options)
    stacks = stacks_of(inputs, args.out_dir, args.scene)
    if args.report is not None:
        check_report(args.report, args.overwrite, args.out_dir)
    make_out_dir(args.out_dir)
    run = BatchRun(args, options)
    notes: list[str] = []
    try:
        for number, stack in enumerate(stacks, 1):
            label = f"{number}/{len(stacks)} {stack.name}"
            try:
                run.fuse(stack, label, len(stacks) - number, inputs)
            except (KeyboardInterrupt, Terminated) as stop:
                run.outcomes.pop()  # the stack cut short: not fused, not failed
                done = sum(o.status != "failed" for o in run.outcomes)
                notes.append(
                    f"Stopped at {stack.describe()}: {len(stacks) - number + 1} not fused."
                )
                return stopped(stop, stack.describe(), done, len(stacks))
    finally:
        run.close()
        if args.report is not None:
            write_report(args.report, run.outcomes, "pdmfuse batch", notes)
            if not args.quiet:
                say(f"report: {args.report} (and {report_csv(args.report).name})")
    return run.summary("batch")
