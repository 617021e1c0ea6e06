"""How long the widget's retouch takes to update the result for one brush stroke on a 4k image.

A stroke is what a drag with napari's brush paints: a dab (a disc of the brush size) at each
mouse position, each dab followed by the update of the window it painted
(:meth:`RetouchSession.sync`, the work the widget does between two mouse events, napari's
own painting and drawing aside). Measured on a 5-plane 4096 × 4096 stack, grey uint16 and
RGB uint8, taking a plane, with and without brightness matching; the result is held in
memory as the widget holds it.

``--viewer`` paints the same strokes in a real napari viewer through the widget's retouch
panel (napari's brush, the session's update and the stroke's preview layer, per dab) and times
the redraw of the result layers once the stroke ends; it needs a display (``xvfb-run``).

    python benchmarks/retouch_stroke.py [--size 4096] [--dabs 40] [--brush 25] [--viewer]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import describe_machine, machine

from napari_pdmfuse.options import FuseOptions
from napari_pdmfuse.reading import Image
from napari_pdmfuse.results import FusionResult
from napari_pdmfuse.viewer.jobs import Outcome, Run
from napari_pdmfuse.viewer.retouching import RetouchSession
from napari_pdmfuse.viewer.sources import Source


def outcome_for(size: int, rgb: bool) -> Outcome:
    """An in-memory result over a random 5-plane stack (the middle plane, as if fused)."""
    rng = np.random.default_rng(0)
    shape = (5, size, size, 3) if rgb else (5, size, size)
    dtype = np.uint8 if rgb else np.uint16
    stack = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    source = Source("bench", rgb, 5, (1.0, 1.0), (0.0, 0.0), (0.0, 255.0), "gray")
    axes = "ZYXS" if rgb else "ZYX"
    run = Run(Image(stack, axes), FuseOptions(method="argmax"), source)
    result = FusionResult(
        fused=stack[2].copy(),
        focus_map=np.full((size, size), 2.0, np.float32),
        confidence=np.ones((size, size), np.float32),
        method="argmax",
        axes="YXS" if rgb else "YX",
    )
    return Outcome(run, "argmax", "slice", result.axes, "YX", result=result)


def in_viewer(size: int, dabs: int, brush: int) -> None:
    """Strokes painted with napari's brush in a viewer: milliseconds per dab and for the
    stroke's end, on the same layers without the retouch (napari's own painting and drawing)
    and with it."""
    from types import SimpleNamespace

    import napari
    from napari.layers import Labels
    from qtpy.QtWidgets import QApplication

    from napari_pdmfuse.viewer import layers
    from napari_pdmfuse.viewer.retouch_panel import RetouchPanel

    def paint(layer: Labels, label: int) -> tuple[float, float]:
        layer.selected_label = label
        times = []
        layer._begin_stroke()
        for i in range(dabs):
            y = x = size // 2 - dabs * 2 + i * 4
            started = time.perf_counter()
            layer.paint((y, x), label)
            QApplication.processEvents()
            times.append(time.perf_counter() - started)
        started = time.perf_counter()
        layer._commit_stroke()
        QApplication.processEvents()
        return statistics.median(times) * 1e3, (time.perf_counter() - started) * 1e3

    viewer = napari.Viewer()
    viewer.window._qt_window.resize(1600, 900)
    print(f"{'image':<12} {'retouch':<22} {'median ms/dab':>14} {'stroke end ms':>14}")
    for rgb in (False, True):
        kind = "RGB uint8" if rgb else "grey uint16"
        outcome = outcome_for(size, rgb)
        layers.show(viewer, outcome)
        plain = Labels(np.zeros((size, size), np.uint8), name="napari alone")
        plain.contour, plain.brush_size = 2, brush
        viewer.add_layer(plain)
        dab, end = paint(plain, 2)
        print(f"{kind:<12} {'none (napari alone)':<22} {dab:>14.1f} {end:>14.1f}")
        viewer.layers.remove(plain)
        panel = RetouchPanel(SimpleNamespace(viewer=viewer))
        panel.follow(outcome)
        layer = panel.start()
        layer.brush_size = brush
        for match in (False, True):
            panel.match.value = match
            QApplication.processEvents()
            dab, end = paint(layer, 4 if match else 2)
            what = "plane, matched" if match else "plane"
            print(f"{kind:<12} {what:<22} {dab:>14.1f} {end:>14.1f}")
        panel.stop()
        viewer.layers.clear()
    viewer.close()


def stroke(session: RetouchSession, dabs: int, brush: int, label: int) -> list[float]:
    """Seconds of each dab's update along a diagonal stroke across the image's middle."""
    size = session.shape_yx[0]
    radius = brush // 2
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = yy**2 + xx**2 <= radius**2
    times = []
    for i in range(dabs):
        y = x = size // 2 - dabs * 2 + i * 4
        window = (slice(y - radius, y + radius + 1), slice(x - radius, x + radius + 1))
        session.labels[window][disc] = label
        started = time.perf_counter()
        session.sync(window)
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--dabs", type=int, default=40)
    parser.add_argument("--brush", type=int, default=25)
    parser.add_argument("--viewer", action="store_true", help="paint in a napari viewer")
    args = parser.parse_args()
    print(describe_machine(machine()))
    print(f"{args.size}² px, 5 planes, brush {args.brush} px, {args.dabs} dabs per stroke")
    if args.viewer:
        in_viewer(args.size, args.dabs, args.brush)
        return
    print(
        f"{'image':<12} {'matching':<9} {'median ms/dab':>14} {'max ms/dab':>11} {'ms/stroke':>10}"
    )
    for rgb in (False, True):
        session = RetouchSession(outcome_for(args.size, rgb))
        for match in (False, True):
            session.set_match_brightness(match)
            label = 4 if match else 2  # a new label each time: every dab changes pixels
            times = [t * 1e3 for t in stroke(session, args.dabs, args.brush, label)]
            kind = "RGB uint8" if rgb else "grey uint16"
            print(
                f"{kind:<12} {'yes' if match else 'no':<9} {statistics.median(times):>14.2f} "
                f"{max(times):>11.2f} {sum(times):>10.1f}"
            )


if __name__ == "__main__":
    main()
