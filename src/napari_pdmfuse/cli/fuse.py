"""``pdmfuse fuse``: one stack into the files named."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import EXIT_OK
from ..files import Outputs, fuse_files_iter
from ..planning import checked_method
from .arguments import fuse_options, scheduler_address
from .progress import drive, elapsed, print_alignment, say


def connected(address: str | None) -> Any:
    """A client of the cluster at ``address``, or None to fuse on this machine.

    The client's own warnings (a result lost with a worker, "rescheduling") are kept off the
    terminal: the run recovers from them, and says in one sentence when it cannot.
    """
    if address is None:
        return None
    import logging

    from ..cluster import connect

    client = connect(address)  # imports distributed, which sets its loggers' levels
    logging.getLogger("distributed.client").setLevel(logging.ERROR)
    return client


def run_fuse(args: argparse.Namespace) -> int:
    """Fuse one stack into the files named; raises PdmFuseError on bad input."""
    options = fuse_options(args)
    checked_method(options)
    outputs = Outputs(args.output, args.focus_map, args.confidence, args.coverage, args.mesh)
    client = connected(scheduler_address(args))
    try:
        steps = fuse_files_iter(
            args.inputs,
            outputs,
            options,
            axes=args.axes,
            overwrite=args.overwrite,
            client=client,
            ome_zarr_version=args.ome_zarr_version,
        )
        written = drive(steps, "pdmfuse", args.quiet)
    finally:
        if client is not None:
            client.close()
    if options.align and not args.quiet:
        print_alignment(written.alignments, options.align)
    if not args.quiet:
        names = ", ".join(str(p) for p in written.paths)
        seconds = elapsed(args.started)
        say(f"fused {written.description} with {options.method} in {seconds:.1f} s → {names}")
    return EXIT_OK
