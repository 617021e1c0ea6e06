"""Make the README's napari screenshots: the diatom sample fused with PDMNet, and its height view.

Run from the repository root (needs a display, or a virtual one):

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/screenshots.py

Writes docs/images/napari-diatom.png and docs/images/height-view.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

IMAGES = Path(__file__).parent / "images"
SIZE = (1600, 900)
MAX_BYTES = 500_000


def settle(seconds: float = 0.5) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.02)


def save(viewer: napari.Viewer, name: str) -> Path:
    """Screenshot the whole window; quantise to a palette if the PNG would be too big."""
    from PIL import Image

    path = IMAGES / name
    settle()
    viewer.screenshot(path=str(path), canvas_only=False, flash=False)
    if path.stat().st_size > MAX_BYTES:
        image = Image.open(path).convert("RGB")
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size / 1e3:.0f} kB", file=sys.stderr)
    return path


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    viewer = napari.Viewer(title="napari-pdmfuse")
    viewer.window._qt_window.resize(*SIZE)
    (stack,) = viewer.open_sample("napari-pdmfuse", "diatom")
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    widget.image.value = stack
    widget.method.value = "pdmnet"
    widget.run()
    while widget.worker is not None:
        settle(0.1)
    name = stack.name
    assert f"{name} fused" in viewer.layers, widget.status.value

    # Fused image and focus map side by side (grid cells follow the layer order).
    stack.visible = False
    viewer.layers.move(viewer.layers.index(f"{name} confidence"), len(viewer.layers))
    viewer.grid.enabled = True
    viewer.grid.shape = (1, 2)
    viewer.layers.selection = {viewer.layers[f"{name} focus map"]}
    viewer.reset_view()
    save(viewer, "napari-diatom.png")

    # The focus map as a 3-D surface coloured by the fused image; 3 planes over 305 px is
    # shallow, so the relief is exaggerated.
    viewer.grid.enabled = False
    widget.relief.value = 25.0
    widget.show_height_view()
    for layer in viewer.layers:
        layer.visible = layer.name == f"{name} height view"
    viewer.layers.selection = {viewer.layers[f"{name} height view"]}
    camera = getattr(viewer, "scene", viewer).camera
    camera.zoom *= 1.15
    save(viewer, "height-view.png")
    viewer.close()


if __name__ == "__main__":
    main()
