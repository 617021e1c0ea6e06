"""Fusions in one napari session: 200 runs of the PDM Fuse widget as a user runs them, while
the process's resident memory, open file descriptors and threads are sampled.

A real viewer (a virtual display on a headless machine) with the widget docked, driven from
inside napari's event loop (``napari.run``) by a timer, so that Qt does all it does in a
session, deleting widgets of removed layers included (a script that only calls
``processEvents`` never deletes them: each removed layer's controls, about 5 MiB, would stay).
Each fusion adds a stack, chooses it in the widget, presses Fuse and waits until the run
ends; then the layers (the stack and its results) are selected and deleted, as the layer
list's delete button does. Nine fusions in ten are of a small stack added as a layer
(6 × 256² uint16, results in memory); every tenth opens a larger stack file with "Open stack…"
(12 × 1024² uint16 tiled TIFF, a new hard link each time, so each is a new file) and streams
its results into OME-Zarr stores in a folder of their own (the widget's in-memory threshold set
to 0 for it). After each tenth of the fusions the process is sampled (``soak.Sampler``), with
the bytes in napari's dask cache, the number of Python objects and Qt widgets. ``--keep``
keeps every layer instead, to show what keeping results costs. $TMPDIR is a new folder, to
count what is left in it: temporary
files (``.pdmfuse-tmp-``) and the streamed runs' folders (``pdmfuse-…``, kept until the same
source is fused again, see docs/napari.md).

    xvfb-run -a nice -n 15 python benchmarks/napari_soak.py              # 200 fusions
    xvfb-run -a nice -n 15 python benchmarks/napari_soak.py --keep --fusions 50
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import common
import numpy as np
from napari_open import small_stack, write_tiled
from soak import Sampler, report, temporaries

STREAM_EVERY = 10  # every tenth fusion streams its results from a stack file

#: What a step of the session waits for before the next one runs (None: nothing).
Wait = Callable[[], bool] | None


def drive(steps: Iterator[Wait]) -> None:
    """Run ``steps`` inside napari's event loop, one after the other, each once what the one
    before it yielded is true; the loop ends with them (an exception in them is raised here).
    The first step, run before the loop starts, makes the viewer."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    waiting: list[Callable[[], bool]] = [next(steps) or (lambda: True)]
    failed: list[BaseException] = []

    def tick() -> None:
        try:
            if waiting[0]():
                waiting[0] = next(steps) or (lambda: True)
        except StopIteration:
            timer.stop()
            QApplication.quit()
        except BaseException as exc:
            failed.append(exc)
            timer.stop()
            QApplication.quit()

    timer = QTimer()
    timer.setInterval(5)
    timer.timeout.connect(tick)
    timer.start()
    napari.run()
    if failed:
        raise failed[0]


def pause(seconds: float) -> Wait:
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def streamed_folders(tmp: Path) -> list[Path]:
    return sorted(p for p in tmp.iterdir() if p.name.startswith("pdmfuse-") and p.is_dir())


def fuse_once(viewer, widget, k: int, small: np.ndarray, large: Path, keep: bool, ok: list):
    """One fusion as a user runs it; appends whether it ended with its results shown."""
    from napari_pdmfuse.viewer import jobs

    streamed = k % STREAM_EVERY == STREAM_EVERY - 1
    jobs.STREAM_BYTES = 0 if streamed else 2**30
    if streamed:  # "Open stack…" on a new file: the widget makes it the source
        path = large.with_name(f"large{k:03d}.tif")
        os.link(large, path)
        widget.choose_path = lambda: path
        widget.open_button.clicked()
    else:
        layer = viewer.add_image(small, name=f"stack{k:03d}")
        widget.mode.value = "stack"
        widget.image.value = layer
    yield pause(0.1)  # the user looks at it
    source = widget.image.value
    widget.fuse_button.clicked()
    yield lambda: widget.worker is None
    yield pause(0.1)
    fused = [x for x in viewer.layers if x.name == f"{source.name} fused"]
    done = widget.status.value.startswith("Fused") and len(fused) == 1
    ok.append(done and fused[0].multiscale == streamed)
    if not keep:
        viewer.layers.select_all()
        viewer.layers.remove_selected()
        if streamed:
            path.unlink()  # the store folder is the widget's to keep or delete


def dask_cache_bytes() -> int:
    """What napari's dask cache holds: chunks of every lazy layer shown, kept after the layer
    is deleted until the cache's limit (a quarter of the memory by default) evicts them."""
    from napari.utils._dask_utils import _DASK_CACHE

    return _DASK_CACHE.cache.total_bytes


def session(args: argparse.Namespace, tmp: Path, sampler: Sampler, rows: list) -> Iterator[Wait]:
    """The whole session, step by step: a viewer, the widget, the fusions and the samples."""
    import napari
    from qtpy.QtWidgets import QApplication

    small = small_stack(6)[:, :256, :256].copy()
    large = tmp / "large.tif"
    write_tiled(large, side=1024, slices=12)
    viewer = napari.Viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    widget.method.value = args.method
    yield pause(1.0)
    tenth = max(1, args.fusions // 10)
    ok: list[bool] = []
    for k in range(args.fusions):
        yield from fuse_once(viewer, widget, k, small, large, args.keep, ok)
        if (k + 1) % tenth == 0:
            yield pause(0.5)
            rss, fds, threads = sampler.sample()[1:]
            counts = (
                round(dask_cache_bytes() / 2**20),
                len(gc.get_objects()),
                len(QApplication.allWidgets()),
                len(viewer.layers),
            )
            left = (len(streamed_folders(tmp)), len(temporaries(tmp)), ok.count(False))
            rows.append((k + 1, rss, fds, threads, *counts, *left))
            print(f"{time.perf_counter() - sampler.began:.0f} s: {rows[-1]}", flush=True)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fusions", type=int, default=200)
    parser.add_argument("--method", default="pdmnet")
    parser.add_argument("--keep", action="store_true", help="keep every layer")
    parser.add_argument("--no-dask-cache", action="store_true", help="turn napari's cache off")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()), flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="napari-soak-"))
    os.environ["TMPDIR"] = str(tmp)  # the widget's store folders go there
    tempfile.tempdir = None
    from napari.settings import get_settings

    settings = get_settings()
    settings._save_on_change = False  # this process's choices stay out of the user's settings
    settings.application.dask.enabled = not args.no_dask_cache
    rows: list[tuple] = []
    sampler = Sampler()
    sampler.start()
    try:
        drive(session(args, tmp, sampler, rows))
        sampler.stop.set()
        kept = "kept" if args.keep else "removed after each"
        print(f"\n{args.fusions} fusions in napari, method {args.method}, layers {kept}")
        names = ["fusions", "dask cache MiB", "Python objects", "Qt widgets", "layers"]
        names.append("store folders")
        report(rows, [*names, "temporary", "failed"])
        peak = max(s[1] for s in sampler.samples) if sampler.samples else float("nan")
        left = temporaries(tmp) or "none"
        seconds = time.perf_counter() - sampler.began
        print(f"{seconds:.0f} s in all; peak RSS sampled {peak:.0f} MiB; temporary files left "
              f"in $TMPDIR: {left}")  # fmt: skip
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
