"""``pdmfuse watch``: fuse each stack as it lands in a folder, never before its writer is done.

A microscope (or a copy from one) writes stacks into a folder over hours. Each entry of the
folder — a stack file, an OME-Zarr store, or with ``--planes N`` a sub-folder of plane images
— is looked at every ``--interval`` seconds; it is fused, by the same per-stack job as
``pdmfuse batch`` (:class:`~.batch.BatchRun`), once it is complete:

- unchanged (its size, its newest modification time and, for a folder, its number of files)
  for ``--stable`` seconds, so a file still being written, or copied, is never read;
- a folder of planes holding ``--planes`` images;
- readable to its end: every scene opens and its last pixel reads (a TIFF cut short fails
  here). A stack that is stable but not readable waits, reported once, until it changes.

A stack that changes after being fused is fused again (its outputs replaced). The outputs of
stacks fused by an earlier run are kept (the batch's resume), so a restart redoes nothing.
Ctrl-C or SIGTERM ends the watch at once; the stack being fused then leaves nothing behind and
is fused at the next start.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, PdmFuseError, Terminated
from ..ngff import is_zarr_name
from ..planning import checked_method
from ..reading import list_scenes, natural_key, open_image
from ..reading.planes import IMAGE_SUFFIXES
from .arguments import fuse_options
from .batch import OUTPUT_SUFFIXES, BatchRun, Outcome, Stack, make_out_dir, scene_stacks
from .progress import say
from .report import check_report, write_report

#: Files taken as stacks (besides OME-Zarr stores and, with --planes, folders of planes).
STACK_SUFFIXES = (".tif", ".tiff", ".czi", ".nd2", ".lif")


@dataclass
class Entry:
    """What the watch knows of one entry of the folder: its last ``signature``, since when
    it has not changed, and whether that version was ``handled`` (fused, failed, or found
    unreadable, with the ``reason``)."""

    signature: tuple[int, int, int]
    since: float
    handled: bool = False
    reason: str | None = None


def signature(path: Path) -> tuple[int, int, int]:
    """Bytes, newest modification time and number of files of a file or a folder's tree: any
    write changes it."""
    if not path.is_dir():
        stat = path.stat()
        return stat.st_size, stat.st_mtime_ns, 1
    size = newest = count = 0
    for folder, _, names in os.walk(path):
        for name in names:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:
                continue  # removed meanwhile (a writer's temporary file)
            size, newest, count = size + stat.st_size, max(newest, stat.st_mtime_ns), count + 1
    return size, newest, count


def unreadable_reason(path: Path) -> str | None:
    """Why the stack cannot be read to its end yet (one sentence), or None when it can."""
    try:
        for scene in list_scenes([path]):
            data = open_image([path], scene=scene.index).data
            np.asarray(data[(slice(-1, None),) * data.ndim])  # the last pixel: the end of it
    except PdmFuseError as exc:
        return str(exc)
    return None


class Watch:
    """The folder's entries, their state, and the batch run that fuses them."""

    def __init__(self, args: argparse.Namespace, run: BatchRun) -> None:
        self.args, self.run = args, run
        self.folder: Path = args.folder
        self.entries: dict[Path, Entry] = {}
        self.names: dict[str, Path] = {}  # output stem → the input it belongs to
        self.changed = time.monotonic()  # when the folder last changed, or a stack was fused

    def candidates(self) -> list[Path]:
        """The folder's entries that may be stacks, in natural name order."""
        skip = {self.args.out_dir.resolve()}
        try:
            names = sorted(os.listdir(self.folder), key=natural_key)
        except OSError as exc:
            raise InputError(
                f"Cannot list the folder {self.folder} ({exc.strerror}); check that it exists "
                "and can be read."
            ) from None
        found = []
        for name in names:
            path = self.folder / name
            if name.startswith((".", "~")) or path.resolve() in skip:
                continue  # hidden and temporary files (pdmfuse's own among them)
            if path.is_dir():
                if is_zarr_name(path) or self.args.planes is not None:
                    found.append(path)
            elif name.lower().endswith(STACK_SUFFIXES):
                found.append(path)
        return found

    def look(self) -> None:
        """Note what changed, and fuse every entry that has become complete."""
        now = time.monotonic()
        for path in self.candidates():
            try:
                current = signature(path)
            except OSError:
                continue  # removed meanwhile
            entry = self.entries.get(path)
            if entry is None or entry.signature != current:
                self.entries[path] = Entry(current, now)
                self.changed = now
                continue
            if entry.handled or now - entry.since < self.args.stable:
                continue
            if path.is_dir() and not is_zarr_name(path) and not self._enough_planes(path):
                continue
            self.handle(path, entry)
            self.changed = time.monotonic()

    def _enough_planes(self, path: Path) -> bool:
        planes = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        return len([p for p in planes if not p.name.startswith(".")]) >= self.args.planes

    def handle(self, path: Path, entry: Entry) -> None:
        """Fuse a complete entry (each of its scenes), or note once why it cannot be read."""
        reason = unreadable_reason(path)
        entry.handled = True
        if reason is not None:
            entry.reason = reason
            say(f"waiting for {path} to change: {reason}")
            return
        entry.reason = None
        for stack in scene_stacks(path, self.args.scene or []):
            clash = self.names.setdefault(stack.name.lower(), path)
            if clash != path:
                target = self.args.out_dir / (stack.name + OUTPUT_SUFFIXES["fused"])
                stack = Stack(
                    path,
                    stack.name,
                    stack.scene,
                    f"{clash} and {path} would both be written to {target}; rename one of them.",
                )
            self.run.fuse(stack, f"{path.name}", 0, [path])
            if self.args.report is not None:
                self.write_report()

    def write_report(self, notes: tuple[str, ...] = ()) -> None:
        write_report(self.args.report, self.run.outcomes, f"pdmfuse watch {self.folder}", notes)

    def idle(self) -> bool:
        """Whether nothing has changed, and nothing is left to fuse, for --idle-exit seconds."""
        limit = self.args.idle_exit
        if limit is None:
            return False
        pending = any(not e.handled for e in self.entries.values())
        return not pending and time.monotonic() - self.changed >= limit

    def unreadable(self) -> list[Outcome]:
        """The stacks still unreadable at the end, as failures."""
        waiting = [(p, e) for p, e in self.entries.items() if e.reason is not None]
        return [Outcome(Stack(p, p.name), error=e.reason) for p, e in waiting]


def run_watch(args: argparse.Namespace) -> int:
    """Watch the folder until Ctrl-C, SIGTERM or --idle-exit; 0 when nothing failed, else 2."""
    options = fuse_options(args)
    checked_method(options)
    folder: Path = args.folder
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder; give the folder the stacks are written to.")
    if args.out_dir.resolve() == folder.resolve():
        raise InputError(
            f"The output folder {args.out_dir} is the watched folder, where the results would "
            "be taken for new stacks; give another --out-dir."
        )
    if args.report is not None:
        check_report(args.report, args.overwrite, args.out_dir)
    make_out_dir(args.out_dir)
    run = BatchRun(args, options)
    watch = Watch(args, run)
    if not args.quiet:
        say(f"watching {folder} (Ctrl-C to stop)")
    stop = None
    try:
        while not watch.idle():
            watch.look()
            time.sleep(args.interval)
    except (KeyboardInterrupt, Terminated) as stopped:
        stop = stopped
    finally:
        run.close()
    if stop is not None:
        cut = run.outcomes and run.outcomes[-1].written is None and run.outcomes[-1].error is None
        if cut:  # the stack being fused when stopped: whole outputs or none, so a restart
            left = run.outcomes.pop()  # fuses it, or keeps outputs moved in just before
            say(f"stopped while fusing {left.stack.describe()}; the next start completes it.")
    run.outcomes.extend(watch.unreadable())
    if args.report is not None:
        watch.write_report(("Watch ended.",))
    return run.summary("watch")
