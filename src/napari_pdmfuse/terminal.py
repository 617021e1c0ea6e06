"""How the ``pdmfuse`` command lives with its terminal: signals, a lost stderr, library noise.

A long fusion often runs in an SSH session or under a batch system, so the run must end cleanly,
or carry on, whatever happens to the terminal:

- SIGTERM (a batch system's stop) and SIGHUP (a dropped SSH session, a closed terminal window)
  both end the run like Ctrl-C: temporary files are removed, one line is printed and the status
  is ``EXIT_TERMINATED`` (143, the shell's 128 + SIGTERM) for both, so scripts and ``pdmfuse
  batch`` see one status for "stopped from outside". A signal the run was started with ignored
  (``nohup pdmfuse ...``) stays ignored, and a second stop signal while the first is being
  handled is ignored, so the clean-up it started is not cut short.
- Ctrl-C before the run starts (while the parser and modules load) prints one line, no
  traceback.
- A closed stderr (``pdmfuse ... 2>&-``) or a broken one (piped into a reader that quit, a
  terminal that went away) never stops the run: messages and the progress bar that cannot be
  written are dropped, and the outputs are written all the same.
- Damaged chunks found late in an OME-Zarr input are reported once; the reads that error cut
  short in zarr's asynchronous codec pipeline, which asyncio would log as hundreds of lines of
  "Task was destroyed but it is pending!" and "exception was never retrieved" tracebacks, are
  not shown.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import IO, Any

#: Signals that stop a run from outside; both end it with the same status and message.
STOP_SIGNALS = ("SIGTERM", "SIGHUP")


class QuietStream:
    """A text stream whose failed writes are dropped instead of raised.

    Writing to a closed stderr (None when Python started without one), a pipe whose reader
    quit (EPIPE) or a terminal that hung up (EIO) raises OSError or ValueError; a progress bar
    or a message is not worth failing an hour-long run for, so after the first failure the
    stream stays silent.
    """

    def __init__(self, stream: IO[str] | None) -> None:
        self.stream = stream
        self.broken = stream is None

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self.stream.write(text)  # type: ignore[union-attr]
            except (OSError, ValueError):
                self.broken = True
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):
                self.broken = True

    def isatty(self) -> bool:
        try:
            return not self.broken and bool(self.stream.isatty())  # type: ignore[union-attr]
        except (OSError, ValueError, AttributeError):
            return False

    def __getattr__(self, name: str) -> Any:  # encoding, errors, fileno… as the stream has them
        if self.stream is None:
            raise AttributeError(name)
        return getattr(self.stream, name)


def open_std_descriptors() -> None:
    """Point closed standard descriptors (0, 1, 2) at /dev/null.

    With stderr closed (``2>&-``) the next file the run opens would get descriptor 2, and any
    library writing a warning "to stderr" would write it into that file: an output, or worse.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                null = os.open(os.devnull, os.O_RDWR)
            except OSError:
                return
            if null != fd:  # lower descriptors were open, so this one is not: never happens
                os.close(null)


@contextmanager
def guarded_stderr() -> Iterator[None]:
    """Route ``sys.stderr`` through a :class:`QuietStream` while the command runs.

    Every message and the progress bar go to ``sys.stderr`` as looked up when written, so they
    all become droppable. A stream that broke stays wrapped afterwards, so the interpreter's own
    flush at exit cannot fail (which would turn a finished run's status into 120).
    """
    previous = sys.stderr
    quiet = QuietStream(previous)
    sys.stderr = quiet  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.stderr is quiet and not quiet.broken:
            sys.stderr = previous


@contextmanager
def stop_signals(exception: type[BaseException]) -> Iterator[None]:
    """Raise ``exception`` on SIGTERM or SIGHUP while the block runs, once.

    Main thread only (elsewhere, or without these signals, the block runs unchanged). Signals
    the process was started with ignored stay ignored.
    """
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:  # a second signal must not interrupt the clean-up of the first
            stopping = True
            raise exception(signum)

    previous: dict[int, Any] = {}
    for name in STOP_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is None:
            continue
        try:
            if signal.getsignal(signum) is signal.SIG_IGN:
                continue
            previous[signum] = signal.signal(signum, stop)
        except (ValueError, OSError):  # not the main thread
            continue
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Leftovers(logging.Filter):
    """Drops asyncio's reports about tasks cut short by an error the run already reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return False


def drop_async_leftovers(timeout: float = 2.0) -> None:
    """Once a run has failed and said why, end zarr's unfinished reads quietly.

    zarr 3 reads chunks as concurrent asyncio tasks on its own event loop. When a damaged chunk
    fails a read, that first error reaches the reader and is reported, but the sibling reads are
    left queued; at exit zarr closes its loop and thread pool under them, and each is reported
    with a full traceback ("Task was destroyed but it is pending!", "exception was never
    retrieved", "Exception ignored in: <coroutine ...>": hundreds of lines after the one that
    matters). So the leftover tasks are cancelled and awaited now (the run is over), and
    asyncio's logs are dropped until the process ends in case some outlive ``timeout``.
    """
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _Leftovers) for f in logger.filters):
        logger.addFilter(_Leftovers())
    sync = sys.modules.get("zarr.core.sync")  # never imported: zarr read nothing
    if sync is None:
        return
    import asyncio  # not at the top: only zarr's reads need it, and it costs start-up time

    loop = getattr(sync, "loop", [None])[0]
    if not isinstance(loop, asyncio.AbstractEventLoop) or loop.is_closed():
        return

    async def settle() -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    try:
        asyncio.run_coroutine_threadsafe(settle(), loop).result(timeout + 1)
    except Exception:  # a loop that stopped or cannot settle in time keeps its tasks
        return
