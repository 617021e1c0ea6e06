"""``pdmfuse``: fuse focus stacks from the command line, for batches and headless machines.

The command only parses arguments, prints and maps errors to exit statuses; the work is the
files-in, files-out job of :mod:`napari_pdmfuse.files`. Errors a user can fix are one line on
stderr and exit status 2; ``pdmfuse batch`` fuses many stacks and carries on past the bad
ones.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence

from ..errors import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    PdmFuseError,
    PdmFuseWarning,
    Terminated,
    printable,
)
from ..terminal import drop_async_leftovers, guarded_stderr, open_std_descriptors, stop_signals
from .arguments import build_parser
from .batch import run_batch
from .fuse import run_fuse
from .watch import run_watch

#: What each subcommand runs.
COMMANDS = {"fuse": run_fuse, "batch": run_batch, "watch": run_watch}

__all__ = ["build_parser", "main"]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # type: ignore[no-untyped-def]
    if issubclass(category, PdmFuseWarning):
        from tqdm import tqdm

        tqdm.write(f"pdmfuse: warning: {printable(str(message))}", file=sys.stderr)
    else:
        _default_showwarning(message, category, filename, lineno, file, line)


_default_showwarning = warnings.showwarning


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Entry point of ``pdmfuse``; returns the exit status instead of exiting, for tests.

    ``started`` is when the run began on the ``time.perf_counter()`` clock, for the closing
    line (the interpreter's start when run as a program; else now).
    """
    started = time.perf_counter() if started is None else started
    open_std_descriptors()
    with guarded_stderr():
        try:
            args = build_parser().parse_args(argv)
            args.started = started
        except SystemExit as exc:  # --help, --version and usage errors: argparse already printed
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
        except KeyboardInterrupt:  # Ctrl-C while starting up: no traceback
            print("pdmfuse: interrupted; nothing was written.", file=sys.stderr)
            return EXIT_INTERRUPTED
        with warnings.catch_warnings(), stop_signals(Terminated):  # SIGTERM, SIGHUP
            warnings.showwarning = _show_warning
            try:
                status = COMMANDS[args.command](args)
            except PdmFuseError as exc:
                print(f"pdmfuse: error: {printable(str(exc))}", file=sys.stderr)
                status = EXIT_ERROR
            except MemoryError:  # outside the tiles, which are split first: one sentence still
                from ..executing import out_of_memory

                print(f"pdmfuse: error: {out_of_memory()}", file=sys.stderr)
                status = EXIT_ERROR
            except KeyboardInterrupt:
                print("pdmfuse: interrupted; nothing was written.", file=sys.stderr)
                status = EXIT_INTERRUPTED
            except Terminated:
                print("pdmfuse: terminated; nothing was written.", file=sys.stderr)
                status = EXIT_TERMINATED
    if status != EXIT_OK:
        drop_async_leftovers()  # the error is reported: the reads it cut short are noise
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
