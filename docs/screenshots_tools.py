"""Make docs/napari.md's screenshots of the widget's tools: retouching, the guided review and a
3-D model, on the diatom sample fused with PDMNet.

Run from the repository root (needs a display, or a virtual one):

    xvfb-run -a -s "-screen 0 1600x1200x24" python docs/screenshots_tools.py

Writes docs/images/retouch.png, docs/images/review.png and docs/images/model.png (a glTF model
exported by the widget, read back with trimesh and shown as a surface).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import napari
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from screenshots import save, settle

from napari_pdmfuse.retouch import OtherFusion

SIZE = (1600, 1100)


def wait(widget_or_panel) -> None:
    while widget_or_panel.worker is not None:
        settle(0.1)


def stroke(layer, points, label) -> None:
    layer.selected_label = label
    layer._begin_stroke()
    for point in points:
        layer.paint(point, label)
    layer._commit_stroke()


def main() -> None:
    viewer = napari.Viewer(title="napari-pdmfuse")
    viewer.window._qt_window.resize(*SIZE)
    (stack,) = viewer.open_sample("napari-pdmfuse", "diatom")
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    widget.image.value = stack
    widget.run()
    wait(widget)
    name = stack.name
    assert f"{name} fused" in viewer.layers, widget.status.value
    stack.visible = False
    viewer.layers[f"{name} focus map"].visible = False

    # The guided review, on the second region of the list.
    review = widget.review
    review.compare.value = OtherFusion("wavelet")
    review.find()
    wait(review)
    review.step(1)
    save(viewer, "review.png")
    viewer.layers.remove(f"{name} review")

    # Retouch: one stroke from plane 1 (out of focus there: it shows), one from the wavelet
    # fusion, outlined on the fused image.
    panel = widget.retouch
    layer = panel.start()
    panel.source.value = 1
    layer.brush_size = 30
    stroke(layer, [(70, 60 + 4 * i) for i in range(20)], 1)
    panel.source.value = OtherFusion("wavelet")
    wait(panel)
    stroke(layer, [(110 + 3 * i, 250) for i in range(15)], layer.selected_label)
    viewer.reset_view()
    save(viewer, "retouch.png")
    layer.undo()
    layer.undo()  # the model below is of the fusion as it was
    panel.stop()
    viewer.layers.remove(layer)

    # The 3-D model as written and read back with trimesh, shown as a surface.
    import trimesh

    widget.relief.value = 25.0
    (path,) = widget.model.export(Path(tempfile.mkdtemp()) / "diatom-model.glb")
    mesh = trimesh.load(path, force="mesh")
    colours = mesh.visual.to_color().vertex_colors / 255.0
    vertices = np.asarray(mesh.vertices)[:, [1, 2, 0]]  # glTF (x, up, row) → napari (z, y, x)
    for existing in viewer.layers:
        existing.visible = False
    viewer.add_surface(
        (vertices, np.asarray(mesh.faces)), vertex_colors=colours, name="diatom-model.glb"
    )
    viewer.dims.ndisplay = 3
    viewer.reset_view()
    camera = getattr(viewer, "scene", viewer).camera
    camera.set_view_direction((-1.0, -0.6, 0.3), up_direction=(1.0, 0.0, 0.0))
    camera.zoom *= 1.1
    save(viewer, "model.png")
    viewer.close()


if __name__ == "__main__":
    main()
