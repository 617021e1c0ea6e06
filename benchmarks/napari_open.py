"""Large TIFF stacks in a real napari viewer: how long they take to open, what napari holds, and
what the PDM Fuse widget adds when it fuses them into multiscale results.

Writes two stacks into a new folder (``--dir``, default under ``$TMPDIR``), deleted at the end
unless ``--keep``:

- ``tiled.tif``: a 20 × 8192² uint16 BigTIFF in 512² tiles, no metadata but tifffile's shaped
  description (2.7 GB);
- ``hyper.tif``: an ImageJ hyperstack of 12 Z × 2 channels × 8192² uint16, 0.2 µm pixels, 1.5 µm
  steps, channels named (3.2 GB, uncompressed as ImageJ writes it).

Each measurement runs in a fresh process with a real viewer (a virtual display on a headless
machine): start napari, open the stack, wait until the plane is drawn, step Z to the middle
plane, then (``--fuse``) fuse it with the widget into OME-Zarr stores (the widget's in-memory
threshold set to 0, so every result streams), waiting until the run ends, and (``--scroll``)
show every Z plane once, which fills napari's dask cache (``--no-dask-cache`` turns it off:
napari's Preferences ▸ Application ▸ Dask cache). Reported: seconds,
RSS (resident memory) of the viewer alone, after opening, and the peaks while opening and while
fusing (sampled every 20 ms, and the process's own peak). Run from the repository root:

    xvfb-run -a nice -n 15 python benchmarks/napari_open.py --fuse
    xvfb-run -a nice -n 15 python benchmarks/napari_open.py --stacks tiled --via napari
    xvfb-run -a nice -n 15 python benchmarks/napari_open.py --via file-open --scroll --no-dask-cache
    xvfb-run -a nice -n 15 python benchmarks/napari_open.py --via file-open,napari --cold

``--cold`` drops each stack from the page cache before it is opened, so it is read from disk.
``--via`` picks how the stack is opened: ``file-open`` (File ▸ Open once PDM Fuse is the
remembered reader for ``*.tif``), ``button`` (the widget's "Open stack…", its dialog answered
by the script) or ``napari`` (File ▸ Open with napari's own reader, for comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import common
import numpy as np
import tifffile

from napari_pdmfuse.training import rendering as render

SIDE = 8192
TILE = 512
STACKS = ("tiled", "hyper")
VIAS = ("file-open", "button", "napari")


# ---------------------------------------------------------------------------------------------
# The stacks, written plane by plane or tile by tile, never whole in memory


def small_stack(slices: int) -> np.ndarray:
    """A rendered 512² uint16 focus stack, repeated (and mirrored) to fill the large planes."""
    rng = np.random.default_rng(29)
    sharp = render.fluorescence(rng, (TILE, TILE))
    depth = render.depth_map(rng, (TILE, TILE), slices)
    return render.render_stack(sharp, depth, slices, rng=rng, photons=1000, bits=16).stack


def _block(small: np.ndarray, z: int, y: int, x: int) -> np.ndarray:
    flip = (y // TILE + x // TILE) % 2
    return small[z, ::-1] if flip else small[z]


def write_tiled(path: Path, side: int = SIDE, slices: int = 20) -> None:
    small = small_stack(slices)
    tiles = (
        _block(small, z, y, x)
        for z in range(slices)
        for y in range(0, side, TILE)
        for x in range(0, side, TILE)
    )
    shape = (slices, side, side)
    tifffile.imwrite(path, tiles, shape=shape, dtype=np.uint16, tile=(TILE, TILE), bigtiff=True)


def write_hyperstack(path: Path, side: int = SIDE, slices: int = 12, channels: int = 2) -> None:
    small = small_stack(slices)
    reps = side // TILE

    def planes():
        for z in range(slices):
            row = np.concatenate([_block(small, z, 0, x * TILE) for x in range(reps)], axis=1)
            odd = np.concatenate([_block(small, z, TILE, x * TILE) for x in range(reps)], axis=1)
            plane = np.concatenate([row, odd] * (reps // 2), axis=0)  # reps is even
            for c in range(channels):
                yield plane if c == 0 else plane[:, ::-1] // 2

    tifffile.imwrite(
        path,
        planes(),
        shape=(slices, channels, side, side),
        dtype=np.uint16,
        imagej=True,
        resolution=(5.0, 5.0),  # pixels per µm
        metadata={
            "axes": "ZCYX",
            "spacing": 1.5,
            "unit": "um",
            "Labels": [f"ch{c}" for _ in range(slices) for c in range(channels)],
        },
    )


def evict(path: Path) -> None:
    """Drop the file's pages from the page cache (its own only), so it is read from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# One measurement, in a process of its own


class PeakRSS:
    """The largest RSS seen since the last :meth:`restart`, sampled in a thread."""

    def __init__(self) -> None:
        import psutil

        self.process = psutil.Process()
        self.peak = 0
        threading.Thread(target=self._sample, daemon=True).start()

    def now(self) -> int:
        return self.process.memory_info().rss

    def restart(self) -> None:
        self.peak = self.now()

    def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.now())
            time.sleep(0.02)


def settle(seconds: float) -> None:
    """Run Qt's event loop for ``seconds``: the viewer draws, signals are delivered."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def until(done, timeout: float = 1800.0) -> None:
    """Run Qt's event loop until ``done()`` is true, as a user waits in front of the viewer."""
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            raise TimeoutError("gave up waiting")
        QApplication.processEvents()
        time.sleep(0.01)


def _gb(nbytes: float) -> float:
    return round(nbytes / 1e9, 2)


def measure(path: Path, via: str, fuse: bool, method: str, scroll: bool, cache: bool) -> dict:
    """Open ``path`` in a new viewer as ``via`` says, step Z, fuse it and show every plane if
    asked, with napari's dask cache on or off."""
    import napari
    from napari.settings import get_settings

    from napari_pdmfuse.viewer import jobs

    rss = PeakRSS()
    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1600, 1000)
    settle(1.0)
    row: dict = {"stack": path.name, "via": via, "viewer_gb": _gb(rss.now())}
    settings = get_settings()
    settings._save_on_change = False  # this process's choices stay out of the user's settings
    settings.application.dask.enabled = cache
    row["dask_cache_gb"] = round(settings.application.dask.cache, 2) if cache else 0
    widget = None
    if via == "button" or fuse:
        _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
        settle(0.5)
    rss.restart()
    start = time.perf_counter()
    if via == "button":
        widget.choose_path = lambda: path
        widget.open_button.clicked()
    else:
        if via == "file-open":  # as after "remember this choice" in napari's reader question
            settings.plugins.extension2reader = {"*.tif": "napari-pdmfuse"}
        plugin = "napari" if via == "napari" else None
        viewer.window._qt_viewer._qt_open([str(path)], stack=False, plugin=plugin)
    layer = viewer.layers[-1]
    until(lambda: layer.loaded)
    row["open_s"] = round(time.perf_counter() - start, 1)
    settle(1.0)
    row.update(
        open_peak_gb=_gb(rss.peak),
        opened_gb=_gb(rss.now()),
        lazy=hasattr(layer.data, "dask"),
        shape=list(layer.data.shape),
        axis_labels=list(layer.axis_labels),
        scale=[round(float(s), 3) for s in layer.scale],
    )
    axis = list(layer.axis_labels).index("z") if "z" in layer.axis_labels else 0
    start = time.perf_counter()
    viewer.dims.set_current_step(axis, layer.data.shape[axis] // 2)
    until(lambda: layer.loaded)
    row["step_z_s"] = round(time.perf_counter() - start, 2)
    settle(1.0)
    row["after_step_gb"] = _gb(rss.now())
    if fuse:
        jobs.STREAM_BYTES = 0  # every result streams to OME-Zarr stores, however small
        widget.image.value = layer
        widget.method.value = method
        rss.restart()
        before = rss.now()
        start = time.perf_counter()
        widget.run()
        until(lambda: widget.worker is None, timeout=6 * 3600.0)  # a busy machine is slow
        row["fuse_s"] = round(time.perf_counter() - start, 1)
        row.update(fuse_peak_gb=_gb(rss.peak), fusion_adds_gb=_gb(rss.peak - before))
        results = [x for x in viewer.layers if x.name.startswith(f"{layer.name} ")]
        row["results"] = {
            x.name: {"multiscale": bool(x.multiscale), "levels": len(x.data)} for x in results
        }
        row["status"] = widget.status.value
        if widget.last is not None and widget.last.folder is not None:
            shutil.rmtree(widget.last.folder, ignore_errors=True)
    if scroll:  # every plane shown once: napari's dask cache keeps what it read
        start = time.perf_counter()
        for z in range(layer.data.shape[axis]):
            viewer.dims.set_current_step(axis, z)
            until(lambda: layer.loaded)
        row["scroll_s"] = round(time.perf_counter() - start, 1)
        settle(1.0)
        row["after_scroll_gb"] = _gb(rss.now())
    row["process_peak_gb"] = _gb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    viewer.close()
    return row


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default=",".join(STACKS), help="tiled, hyper")
    parser.add_argument("--via", default="file-open,button", help=", ".join(VIAS))
    parser.add_argument("--fuse", action="store_true", help="fuse each stack opened by button")
    parser.add_argument("--method", default="argmax")
    parser.add_argument("--scroll", action="store_true", help="show every Z plane at the end")
    parser.add_argument("--no-dask-cache", action="store_true", help="turn napari's cache off")
    parser.add_argument("--cold", action="store_true", help="evict the stack from the page cache")
    parser.add_argument("--side", type=int, default=SIDE, help="plane side, a multiple of 1024")
    parser.add_argument("--dir", type=Path, help="folder for the stacks (default: a new one)")
    parser.add_argument("--keep", action="store_true", help="keep the stacks")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        path, via, *flags = args.child
        fuse, scroll, cache = (flag == "1" for flag in flags)
        print(json.dumps(measure(Path(path), via, fuse, args.method, scroll, cache)), flush=True)
        return

    print(common.describe_machine(common.machine()), flush=True)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="napari-open-"))
    folder.mkdir(parents=True, exist_ok=True)
    writers = {"tiled": write_tiled, "hyper": write_hyperstack}
    rows = []
    try:
        for name in args.stacks.split(","):
            path = folder / f"{name}.tif"
            if not path.is_file():
                print(f"writing {path}", flush=True)
                writers[name](path, args.side)
            for via in args.via.split(","):
                fuse = args.fuse and via == "button"
                env = {**os.environ, "TMPDIR": str(folder)}  # the widget's stores go there too
                if args.cold:
                    evict(path)
                flags = [fuse, args.scroll, not args.no_dask_cache]
                cmd = [sys.executable, __file__, "--child", str(path), via]
                cmd += ["1" if flag else "0" for flag in flags] + ["--method", args.method]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
                if proc.returncode or not lines:
                    print(f"{name} {via}: failed\n{proc.stderr[-2000:]}", flush=True)
                    continue
                rows.append(json.loads(lines[-1]))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    keys = ["stack", "via", "open_s", "step_z_s", "viewer_gb", "opened_gb", "open_peak_gb"]
    keys += ["fuse_s", "fuse_peak_gb", "fusion_adds_gb", "after_scroll_gb", "process_peak_gb"]
    print("\n" + " | ".join(keys))
    for row in rows:
        print(" | ".join(str(row.get(k, "")) for k in keys))


if __name__ == "__main__":
    main()
