"""``pdmfuse fuse``: one stack into the files named."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK
from ..files import Outputs, describe_inputs, fuse_files_iter, scene_outputs
from ..ngff import is_zarr_name, is_zarr_store
from ..options import FuseOptions
from ..planning import checked_method
from ..reading import is_url, list_scenes, pick_scenes
from ..writing import check_outputs
from .arguments import fuse_options, scheduler_address
from .progress import drive, elapsed, print_alignment, say


def connected(address: str | None) -> Any:
    """A client of the cluster at ``address``, or None to fuse on this machine.

    The client's own logs (a result lost with a worker, "rescheduling"; a connection closed
    under it, with a traceback) are kept off the terminal: the run recovers from what they
    report, and says in one sentence when it cannot.
    """
    if address is None:
        return None
    import logging

    from ..cluster import connect

    client = connect(address)  # imports distributed, which sets its loggers' levels
    for name in ("distributed", "distributed.client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    return client


def run_fuse(args: argparse.Namespace) -> int:
    """Fuse one stack into the files named — or each scene of a file that holds several into
    files named after it; raises PdmFuseError on bad input."""
    options = fuse_options(args)
    checked_method(options)
    outputs = Outputs(args.output, args.focus_map, args.confidence, args.coverage, args.mesh)
    if _into_plates(args, outputs):
        return _fuse_plate(args, outputs, options)
    chosen = pick_scenes(list_scenes(args.inputs), args.scene or [], describe_inputs(args.inputs))
    named = scene_outputs(outputs, chosen)
    if len(named) > 1:  # every scene's names, before the first scene starts
        every = [p for each in named for p in each.named().values()]
        check_outputs(every, args.inputs, overwrite=args.overwrite)
    client = connected(scheduler_address(args))
    try:
        for scene, scene_named in zip(chosen, named, strict=True):
            which = "" if len(named) == 1 else f" {scene.describe()}"
            steps = fuse_files_iter(
                args.inputs,
                scene_named,
                options,
                axes=args.axes,
                overwrite=args.overwrite,
                client=client,
                ome_zarr_version=args.ome_zarr_version,
                scene=scene.index,
            )
            written = drive(steps, f"pdmfuse{which}", args.quiet)
            if options.align and not args.quiet:
                print_alignment(written.alignments, options.align)
            if not args.quiet:
                names = ", ".join(str(p) for p in written.paths)
                what = (
                    written.description
                    if len(named) == 1
                    else f"{which[1:]}, {written.description}"
                )
                seconds = elapsed(args.started) if len(named) == 1 else written.seconds
                say(f"fused {what} with {options.method} in {seconds:.1f} s → {names}")
    finally:
        if client is not None:
            client.close()
    return EXIT_OK


def _into_plates(args: argparse.Namespace, outputs: Outputs) -> bool:
    """Whether to fuse an HCS plate into plates: all of it, into outputs named .ome.zarr."""
    if args.scene or len(args.inputs) != 1 or is_url(args.inputs[0]):
        return False
    if not all(is_zarr_name(p) for p in outputs.named().values()):
        return False
    if not is_zarr_store(Path(args.inputs[0])):
        return False
    from ..plates import plate_layout  # zarr is imported for zarr inputs only

    return plate_layout(Path(args.inputs[0])) is not None


def _fuse_plate(args: argparse.Namespace, outputs: Outputs, options: FuseOptions) -> int:
    from ..plates import fuse_plate_iter

    client = connected(scheduler_address(args))
    try:
        steps = fuse_plate_iter(
            args.inputs[0],
            outputs,
            options,
            overwrite=args.overwrite,
            client=client,
            ome_zarr_version=args.ome_zarr_version,
        )
        written = drive(steps, "pdmfuse", args.quiet)
    finally:
        if client is not None:
            client.close()
    if not args.quiet:
        names = ", ".join(str(p) for p in written.paths)
        seconds = elapsed(args.started)
        say(f"fused {written.description} with {options.method} in {seconds:.1f} s → {names}")
    return EXIT_OK
