"""The ``pdmfuse`` command's entry point (the script, and ``python -m napari_pdmfuse``).

It loads nothing but the standard library before it can catch Ctrl-C, then the command itself;
the terminal handling lives in :mod:`.terminal`, the command in :mod:`.cli`.
"""

from __future__ import annotations

import sys
import time
from typing import NoReturn

from .errors import EXIT_INTERRUPTED
from .heap import keep_freed_memory

#: When this interpreter started, on the ``time.perf_counter()`` clock: this module is the
#: first of the command's code to run, and before it the interpreter spent only CPU time on
#: its own start-up (about 10 ms), which the process's CPU time so far counts. Not the
#: process's creation: a shell that ends in ``exec`` (``bash -c 'sleep 5; pdmfuse …'``, a job
#: script's last line) hands its process over, with everything the shell ran before.
STARTED = time.perf_counter() - time.process_time()


def launch() -> NoReturn:
    """Run the ``pdmfuse`` command as a program (``python -m napari_pdmfuse``, the script).

    Ctrl-C while the command's modules load (seconds on a busy cluster file system), before
    :func:`napari_pdmfuse.cli.main` can catch it, ends with one line, not with a traceback of
    the import under way. Only imports made from here on are covered, so this module and the
    package's ``__init__`` must load nothing heavy.
    """
    try:
        keep_freed_memory()
        load_dask_array()
        from .cli import main

        status = main(started=STARTED)
    except KeyboardInterrupt:
        from .terminal import guarded_stderr, open_std_descriptors

        open_std_descriptors()
        with guarded_stderr():
            print("pdmfuse: interrupted; nothing was written.", file=sys.stderr)
        status = EXIT_INTERRUPTED
    sys.exit(status)


def load_dask_array() -> None:
    """Import dask.array, which every input is read through, without xarray or scipy.fftpack.

    dask.array imports xarray whenever it is installed (it comes with the vendor formats'
    readers), only so that ``dask.array.from_array`` can unwrap xarray's chunked arrays, and
    scipy.fftpack, only for ``dask.array.fft``'s wrappers of it; the command uses neither.
    They would add a fifth of a second and a few hundredths to every run's start-up. Only the
    command's own process does this, and both stay importable for the code that uses them.
    """
    if "dask.array" in sys.modules or "xarray" in sys.modules:
        return
    blocked = [name for name in ("xarray", "scipy.fftpack") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # `import name` fails meanwhile
    try:
        import dask.array  # noqa: F401
    except ImportError:  # dask missing or broken: reported where the run first needs it
        pass
    finally:
        for name in blocked:
            del sys.modules[name]
