"""What the command prints while it works: a progress bar, the alignment, summaries."""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import Any, TypeVar

from ..errors import printable
from ..planning import AlignmentLog, Progress

T = TypeVar("T")


def progress_bar(label: str, total: int | None, quiet: bool) -> Any:
    """A tqdm bar on stderr counting tiles (hidden with --quiet); a bar that cannot be drawn
    (stderr closed or broken) is dropped, never the run."""
    from tqdm import tqdm

    from ..terminal import QuietStream

    stream = QuietStream(sys.stderr)
    return tqdm(
        desc=label, total=total, unit="tile", file=stream, disable=quiet, dynamic_ncols=True
    )


def drive(steps: Generator[Progress, None, T], label: str, quiet: bool) -> T:
    """Run a progress generator to its end with a bar, opened at the first step (once the
    options and data passed their checks); returns the generator's value."""
    bar = None
    try:
        while True:
            try:
                step = next(steps)
            except StopIteration as stop:
                return stop.value
            if bar is None:
                bar = progress_bar(label, step.total, quiet)
            elif bar.total != step.total:
                bar.total = step.total
                bar.refresh()
            bar.update(step.done - bar.n)
    finally:
        steps.close()  # its clean-up (temporary files, cluster tasks) runs before ours
        if bar is not None:
            bar.close()


def elapsed(started: float) -> float:
    """Seconds since ``started`` (``time.perf_counter()``): with the interpreter's start, the
    whole run, loading the libraries included."""
    import time

    return time.perf_counter() - started


def say(message: str) -> None:
    """One line on stderr, above any progress bar (file names in it escaped, see
    :func:`~napari_pdmfuse.errors.printable`)."""
    from tqdm import tqdm

    tqdm.write(f"pdmfuse: {printable(message)}", file=sys.stderr)


def print_alignment(log: AlignmentLog, model: str) -> None:
    """The alignment report of each time point, and how much of the field all planes cover."""
    from ..align import report

    items = sorted(log.by_time.items(), key=lambda item: -1 if item[0] is None else item[0])
    for t, alignment in items:
        where = f", time point {t + 1} of {len(items)}" if t is not None and len(items) > 1 else ""
        say(
            f"alignment ({model}){where}: every plane covers {100 * alignment.fraction:.1f} % of "
            "the field"
        )
        print(report(alignment.transforms), file=sys.stderr)
