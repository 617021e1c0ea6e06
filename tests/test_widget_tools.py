"""The widget's tools in a real napari viewer: retouch strokes from a plane and from another
fusion, undo and redo, the saved mask through the command line, streamed results rewritten
chunk by chunk; the guided review stepping through regions; the 3-D model export.

The fusions run argmax (the other fusion wavelet), on stacks of a few hundred pixels.
"""

from __future__ import annotations

import itertools
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import fuse
from napari_pdmfuse.cli import main
from napari_pdmfuse.retouch import OtherFusion, read_mask
from napari_pdmfuse.viewer import jobs
from napari_pdmfuse.viewer.retouching import RetouchSession
from napari_pdmfuse.writing.omezarr import CHUNK

TIMEOUT_MS = 60_000


def rendered(shape=(96, 128), n=5) -> np.ndarray:
    from napari_pdmfuse.training import rendering as render

    planes = render.random_stack(np.random.default_rng(4), shape, n_slices=n, rgb=False).stack
    return (planes.astype(np.float64) / planes.max() * 60_000).astype(np.uint16)


def fused_in_viewer(make_napari_viewer, qtbot, stack, **layer):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    source = viewer.add_image(stack, name="stack", **layer)
    widget.image.value = source
    widget.method.value = "argmax"
    widget.fuse_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)
    assert "stack fused" in viewer.layers, widget.status.value
    return viewer, widget


def stroke(layer, points, label):
    """One brush stroke through ``points`` (row, column), as a drag of the mouse paints it."""
    layer.selected_label = label
    layer._begin_stroke()
    for point in points:
        layer.paint(point, label)
    layer._commit_stroke()


def test_strokes_from_a_plane_and_another_fusion_with_undo(make_napari_viewer, qtbot, tmp_path):
    stack = rendered()
    viewer, widget = fused_in_viewer(make_napari_viewer, qtbot, stack, scale=(1.0, 0.5, 0.5))
    panel = widget.retouch
    fused_layer, focus_layer = viewer.layers["stack fused"], viewer.layers["stack focus map"]
    original_fused = fused_layer.data.copy()
    original_focus = focus_layer.data.copy()
    assert panel.start_button.enabled

    layer = panel.start()
    assert layer.name == "stack retouch" and layer.data.shape == (96, 128)
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))  # placed like the result
    panel.source.value = 2  # plane 2
    assert layer.selected_label == 2 and layer.mode == "paint"
    layer.brush_size = 11
    layer._begin_stroke()  # while the stroke is painted, it shows in a preview layer
    layer.paint((30, 20), 2)
    preview = viewer.layers["stack retouch preview"]
    assert preview.visible
    assert viewer.layers.index(preview) == viewer.layers.index(fused_layer) + 1
    np.testing.assert_allclose(preview.scale, (0.5, 0.5))
    box = (slice(25, 36), slice(15, 26))  # the dab (the preview holds all of this small image)
    shown = np.where(layer.data[box] == 2, stack[1][box], original_fused[box])
    np.testing.assert_array_equal(preview.data[box], shown)
    layer._commit_stroke()
    assert not preview.visible  # drawn into the result layers
    stroke(layer, [(30, 30), (32, 40)], 2)

    plane = layer.data == 2
    assert plane.sum() > 100
    np.testing.assert_array_equal(fused_layer.data[plane], stack[1][plane])
    assert (focus_layer.data[plane] == 1).all()
    np.testing.assert_array_equal(fused_layer.data[~plane], original_fused[~plane])
    np.testing.assert_array_equal(focus_layer.data[~plane], original_focus[~plane])

    wavelet = OtherFusion("wavelet")
    panel.source.value = wavelet  # made in the background first, then painted with
    qtbot.waitUntil(lambda: panel.worker is None, timeout=TIMEOUT_MS)
    label = panel.session.label_of(wavelet)
    assert layer.selected_label == label == 5 + 1 + 1  # after the planes and pdmnet
    stroke(layer, [(70, 90), (75, 100)], label)

    other = fuse(stack, method="wavelet")
    taken = layer.data == label
    assert taken.sum() > 100
    np.testing.assert_array_equal(fused_layer.data[taken], other.fused[taken])
    np.testing.assert_array_equal(focus_layer.data[taken], other.focus_map[taken])
    np.testing.assert_array_equal(fused_layer.data[plane], stack[1][plane])

    layer.undo()  # the wavelet stroke goes: the fusion is back under it
    np.testing.assert_array_equal(fused_layer.data[taken], original_fused[taken])
    np.testing.assert_array_equal(focus_layer.data[taken], original_focus[taken])
    np.testing.assert_array_equal(fused_layer.data[plane], stack[1][plane])
    layer.redo()
    np.testing.assert_array_equal(fused_layer.data[taken], other.fused[taken])

    for _ in range(3):  # every stroke undone: the result is the fusion again
        layer.undo()
    np.testing.assert_array_equal(fused_layer.data, original_fused)
    np.testing.assert_array_equal(focus_layer.data, original_focus)
    for _ in range(3):
        layer.redo()

    # The saved mask makes the command line give the widget's result exactly, brightness
    # matching included.
    panel.match.value = True
    matched = fused_layer.data.copy()
    assert not np.array_equal(matched[plane], stack[1][plane])
    tifffile.imwrite(tmp_path / "stack.tif", stack, imagej=True, metadata={"axes": "ZYX"})
    saved = panel.save(tmp_path / "mask.tif")
    mask = read_mask(saved)
    assert mask.sources == {label: wavelet} and mask.match_brightness and mask.planes == 5
    assert fused_layer.metadata["retouch"] == mask.record()  # the layers say it too
    code = main(
        ["fuse", str(tmp_path / "stack.tif"), "-o", str(tmp_path / "fused.tif"), "--focus-map",
         str(tmp_path / "focus.tif"), "--method", "argmax", "--retouch", str(saved), "-q"]
    )  # fmt: skip
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "fused.tif"), fused_layer.data)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "focus.tif"), focus_layer.data)


def test_setting_the_labels_from_a_script(make_napari_viewer, qtbot):
    stack = rendered((64, 80), 4)
    viewer, widget = fused_in_viewer(make_napari_viewer, qtbot, stack)
    layer = widget.retouch.start()
    fused_layer = viewer.layers["stack fused"]
    labels = np.zeros((64, 80), np.uint8)
    labels[10:20, 10:30] = 4
    layer.data = labels  # a new array: the session follows it
    np.testing.assert_array_equal(fused_layer.data[10:20, 10:30], stack[3][10:20, 10:30])
    layer.data[40:50, 40:60] = 1  # written in place, then shown
    layer.refresh()
    layer.events.data(value=layer.data)
    np.testing.assert_array_equal(fused_layer.data[40:50, 40:60], stack[0][40:50, 40:60])


def chunk_files(store: Path) -> dict[str, int]:
    """Every chunk file of a store by path, with its modification time."""
    return {
        str(p.relative_to(store)): p.stat().st_mtime_ns
        for p in store.rglob("*")
        if p.is_file() and "json" not in p.name and ".z" not in p.name
    }


@pytest.mark.slow
def test_streamed_result_rewrites_only_touched_chunks(make_napari_viewer, qtbot, monkeypatch):
    monkeypatch.setattr(jobs, "STREAM_BYTES", 0)  # every result streams into OME-Zarr stores
    stack = rendered((1100, 2600), 3)
    viewer, widget = fused_in_viewer(make_napari_viewer, qtbot, stack)
    outcome = widget.last
    assert outcome.streamed
    store = outcome.stores["fused"]
    before = chunk_files(store)
    levels = jobs.store_levels(store)
    assert [level.shape for level in levels] == [(1100, 2600), (550, 1300), (275, 650), (137, 325)]
    original = np.asarray(levels[0])

    widget.retouch.start()
    session: RetouchSession = widget.retouch.session
    layer = widget.retouch.layer
    layer.brush_size = 21
    peaks = []
    update = session.update

    def traced(window):  # the memory the session's own work takes, not napari's drawing
        tracemalloc.start()
        try:
            return update(window)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(session, "update", traced)
    stroke(layer, [(700, 700), (720, 760)], 3)  # inside chunk (1, 1) of level 0
    whole = original.nbytes + original.size * 4  # the fused image and the focus map
    assert peaks and max(peaks) < min(whole / 2, 8 * CHUNK**2 * 4)  # a few chunks at most

    changed = sorted(k for k, t in chunk_files(store).items() if before.get(k) != t)
    assert changed == ["0/c/1/1", "1/c/0/0", "2/c/0/0", "3/c/0/0"]  # zarr 3 keys: level/c/row/col
    taken = layer.data == 3
    now = [np.asarray(level) for level in jobs.store_levels(store)]
    np.testing.assert_array_equal(now[0][taken], stack[2][taken])
    np.testing.assert_array_equal(now[0][~taken], original[~taken])
    for above, below in itertools.pairwise(now):  # the pyramid shows the change
        height, width = below.shape
        means = above[: 2 * height, : 2 * width].reshape(height, 2, width, 2).mean(axis=(1, 3))
        np.testing.assert_array_equal(below, np.rint(means).astype(below.dtype))
    shown = viewer.layers["stack fused"]
    assert not shown.cache  # redrawn from the stores

    layer.undo()
    np.testing.assert_array_equal(np.asarray(jobs.store_levels(store)[0]), original)
    assert session.target.saved == {(1, 1)}


def test_review_steps_through_doubtful_regions(make_napari_viewer, qtbot):
    stack = rendered()
    viewer, widget = fused_in_viewer(make_napari_viewer, qtbot, stack, scale=(1.0, 0.5, 0.5))
    panel = widget.review
    assert panel.find_button.enabled
    assert panel.compare.value == OtherFusion("pdmnet")  # argmax is compared with PDMNet
    panel.compare.value = OtherFusion("wavelet")  # faster here
    panel.find_button.clicked()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=TIMEOUT_MS)

    regions = panel.regions
    assert len(regions) >= 2, panel.status.value
    outlines = viewer.layers["stack review"]
    assert len(outlines.data) == len(regions)
    np.testing.assert_allclose(outlines.scale, (0.5, 0.5))
    assert list(outlines.features["rank"]) == list(range(1, len(regions) + 1))
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)

    def centred_on(region):
        return np.allclose(viewer.camera.center[-2:], np.asarray(region.centre) * 0.5)

    assert panel.index == 0 and centred_on(regions[0])
    assert panel.status.value.startswith(f"Region 1 of {len(regions)}: ")
    zoom = viewer.camera.zoom
    viewer.reset_view()
    assert zoom == pytest.approx(viewer.camera.zoom)  # 96 × 128 px: all of it is context
    panel.next_button.clicked()
    assert panel.index == 1 and centred_on(regions[1])
    panel.previous_button.clicked()
    panel.previous_button.clicked()  # wraps round to the last
    assert panel.index == len(regions) - 1 and centred_on(regions[-1])


def test_model_export_from_the_widget(make_napari_viewer, qtbot, tmp_path):
    import trimesh

    stack = rendered((64, 80), 4)
    units = ("um", "um", "um")
    viewer, widget = fused_in_viewer(
        make_napari_viewer, qtbot, stack, scale=(2.0, 0.5, 0.5), units=units
    )
    assert widget.model.export_button.enabled
    widget.relief.value = 3.0
    (path,) = widget.model.export(tmp_path / "model.glb")
    mesh = trimesh.load(path, force="mesh")
    assert len(mesh.vertices) == 64 * 80
    width, height, depth = mesh.extents
    assert (width, depth) == pytest.approx((79 * 0.5, 63 * 0.5))  # µm
    focus = viewer.layers["stack focus map"].data  # in µm: the layer's Z step is 2 µm
    assert 0 < height <= 3.0 * (focus.max() - focus.min()) + 1e-3
    assert mesh.metadata["unit"] == "micrometre"
