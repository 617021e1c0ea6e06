"""The napari plugin end to end: manifest, dock widget, worker, result layers, samples, reader.

Runs a real napari viewer under Xvfb (pytest-xvfb); the tests use method="argmax" for speed,
except the one that checks the default method, PDMNet, on the diatom sample. Every run is
checked against :func:`napari_pdmfuse.fuse` on the same array.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_pdmfuse import Progress, fuse
from napari_pdmfuse.options import DEVICES
from napari_pdmfuse.viewer import jobs
from napari_pdmfuse.viewer import widget as widget_module
from napari_pdmfuse.viewer.height_view import auto_step
from napari_pdmfuse.viewer.samples import DIATOM_NAME, KEYBOARD_NAME, RENDERED_NAME

WORKER_TIMEOUT_MS = 60_000


@pytest.fixture
def notifications(monkeypatch):
    """Messages the widget shows with napari's show_error."""
    shown: list[str] = []
    original = widget_module.show_error

    def record(message: str) -> None:
        shown.append(message)
        original(message)

    monkeypatch.setattr(widget_module, "show_error", record)
    return shown


@pytest.fixture
def activity(monkeypatch):
    """The napari progress entries (activity dock) the widget opens."""
    opened = []

    class Recorded(widget_module.progress):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(widget_module, "progress", Recorded)
    return opened


def dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    return widget


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WORKER_TIMEOUT_MS)


def fuse_layer(qtbot, widget, layer, method="argmax"):
    widget.mode.value = "stack"
    widget.image.value = layer
    widget.method.value = method
    widget.fuse_button.clicked()
    wait(qtbot, widget)


def uint16_stack(shape=(5, 64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape, dtype=np.uint16)


def shown(widget):
    """Whether the widget is shown in the dock (``visible`` also needs the window on screen)."""
    return not widget.native.isHidden()


def names(viewer):
    return [layer.name for layer in viewer.layers]


def test_widget_fuses_layer_and_rerun_replaces(make_napari_viewer, qtbot, notifications, activity):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    assert widget.method.value == "pdmnet"  # the default, though the tests run argmax
    assert widget.method.choices == ("pdmnet", "wavelet", "pyramid", "argmax")
    assert widget.device.choices[:2] == ("auto", "cpu")  # and CUDA or MPS where present
    assert set(widget.device.choices) <= set(DEVICES)
    assert widget.device_info.value  # describe_devices(): which accelerator exists
    assert not widget.height_button.enabled
    source = viewer.add_image(
        uint16_stack(), name="stack", scale=(2.0, 0.5, 0.25), translate=(0, 10, 20)
    )
    source.colormap = "magma"
    source.contrast_limits = (100, 3000)

    fuse_layer(qtbot, widget, source)

    assert notifications == []
    assert names(viewer) == ["stack", "stack confidence", "stack focus map", "stack fused"]
    fused = viewer.layers["stack fused"]
    focus = viewer.layers["stack focus map"]
    confidence = viewer.layers["stack confidence"]
    assert fused.data.shape == (64, 64)
    assert fused.data.dtype == np.uint16
    assert fused.colormap.name == "magma"
    assert tuple(fused.contrast_limits) == (100, 3000)
    for layer in (fused, focus, confidence):
        np.testing.assert_allclose(layer.scale, (0.5, 0.25))
        np.testing.assert_allclose(layer.translate, (10, 20))
    assert focus.data.shape == (64, 64)
    assert focus.data.dtype == np.float32
    assert focus.colormap.name == "turbo"
    assert not confidence.visible
    assert confidence.data.shape == (64, 64)
    expected = fuse(source.data, method="argmax", z_spacing=2.0)
    np.testing.assert_array_equal(fused.data, expected.fused)
    # The layer's Z scale is 2, so the focus map is in its units: 2 × the slice index.
    np.testing.assert_allclose(focus.data, expected.focus_map)
    np.testing.assert_allclose(focus.data, 2.0 * fuse(source.data, method="argmax").focus_map)
    assert focus.metadata["focus_unit"] == "z scale units"
    assert tuple(focus.contrast_limits) == (0.0, 8.0)
    assert widget.progress.value == widget.progress.max
    assert len(activity) == 1 and activity[0].n == activity[0].total >= 1
    assert activity[0] not in type(activity[0])._all_instances  # closed
    assert widget.height_button.enabled

    # A second run on the same source updates the result layers in place.
    source.data = uint16_stack(seed=1)
    fuse_layer(qtbot, widget, source)
    assert names(viewer) == ["stack", "stack confidence", "stack focus map", "stack fused"]
    assert viewer.layers["stack fused"] is fused
    np.testing.assert_array_equal(fused.data, fuse(source.data, method="argmax").fused)


def test_results_of_a_layer_named_with_undecodable_bytes_have_escaped_names(
    make_napari_viewer, qtbot, notifications
):
    # napari's own reader names a layer after its file, undecodable bytes and all.
    viewer = make_napari_viewer()
    widget = dock(viewer)
    source = viewer.add_image(uint16_stack(), name=os.fsdecode(b"st\xffack"))
    fuse_layer(qtbot, widget, source)
    assert notifications == []
    results = [layer.name for layer in viewer.layers if layer is not source]
    assert results == ["st\\xffack confidence", "st\\xffack focus map", "st\\xffack fused"]
    assert viewer.layers["st\\xffack fused"].metadata["source"] == "st\\xffack"


def test_z_axis_from_labels_and_channel_axis(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = uint16_stack((2, 5, 48, 40))  # (C, Z, Y, X)
    layer = viewer.add_image(
        data, name="cells", axis_labels=("c", "z", "y", "x"), scale=(1.0, 1.0, 0.3, 0.3)
    )
    widget.image.value = layer
    assert widget.z_axis.value == 1
    assert widget.channel_axis.value == 0
    assert shown(widget.channel_axis)

    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    fused = viewer.layers["cells fused"]
    expected = fuse(data, method="argmax", z_axis=1, channel_axis=0)
    assert fused.data.shape == (2, 48, 40)  # channels where the source had them
    np.testing.assert_array_equal(fused.data, np.moveaxis(expected.fused, -1, 0))
    np.testing.assert_allclose(fused.scale, (1.0, 0.3, 0.3))
    assert viewer.layers["cells focus map"].metadata["focus_unit"] == "slices"

    # Without labels, Z defaults to the first axis; a grey 3-D layer has no channel axis.
    plain = viewer.add_image(uint16_stack((4, 32, 32)), name="plain")
    widget.image.value = plain
    assert widget.z_axis.value == 0
    assert not shown(widget.channel_axis)


def test_list_of_2d_layers_as_planes(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    stack = uint16_stack((4, 40, 56))
    viewer.add_image(uint16_stack((40, 56), seed=9), name="unrelated")
    for i, plane in enumerate(stack):
        viewer.add_image(plane, name=f"p{i}", scale=(0.5, 0.5))
    widget.mode.value = "planes"
    assert not shown(widget.image) and shown(widget.planes)
    # The list follows the viewer: 2-D image layers only, in the layer list's order.
    assert [layer.name for layer in widget.planes.choices] == ["unrelated", "p0", "p1", "p2", "p3"]
    chosen = [viewer.layers[f"p{i}"] for i in (2, 0, 3, 1)]  # selection order does not matter
    widget.planes.value = chosen
    widget.method.value = "argmax"
    widget.fuse_button.clicked()
    wait(qtbot, widget)

    assert notifications == []
    fused = viewer.layers["p0 … p3 fused"]
    expected = fuse(stack, method="argmax")
    np.testing.assert_array_equal(fused.data, expected.fused)  # planes in the listed order
    np.testing.assert_allclose(viewer.layers["p0 … p3 focus map"].data, expected.focus_map)
    np.testing.assert_allclose(fused.scale, (0.5, 0.5))

    widget.planes.value = [viewer.layers["p0"]]
    widget.fuse_button.clicked()
    qtbot.wait(50)
    assert widget.worker is None
    assert notifications[-1].startswith("Only one layer is chosen")


def test_outputs_to_produce(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    layer = viewer.add_image(uint16_stack((3, 400, 300)), name="stack")
    widget.out_fused.value = False
    widget.out_confidence.value = False
    widget.tile.value = 256
    fuse_layer(qtbot, widget, layer)
    assert notifications == []
    assert names(viewer) == ["stack", "stack focus map"]
    assert widget.progress.max == 4  # 400 × 300 in 256-px tiles

    widget.out_focus.value = False
    widget.fuse_button.clicked()
    assert widget.worker is None
    assert "at least one output" in notifications[-1]


def test_2d_layer_shows_error_and_adds_nothing(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    flat = viewer.add_image(uint16_stack((64, 64)), name="flat")

    widget.image.value = flat
    widget.fuse_button.clicked()
    qtbot.wait(50)

    assert widget.worker is None
    assert len(notifications) == 1
    assert "2-D" in notifications[0]
    assert names(viewer) == ["flat"]


def test_core_error_in_worker_shows_error_and_adds_nothing(
    make_napari_viewer, qtbot, notifications
):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = uint16_stack().astype(np.float32)
    data[2, 10, 10] = np.nan
    layer = viewer.add_image(data, name="nan")

    fuse_layer(qtbot, widget, layer)

    assert len(notifications) == 1
    assert "NaN" in notifications[0]
    assert names(viewer) == ["nan"]
    assert widget.fuse_button.enabled


def test_cancel_leaves_viewer_unchanged(make_napari_viewer, qtbot, monkeypatch, activity):
    closed = []

    def slow_fuse_run(run):
        try:
            for done in range(200):
                yield Progress(done, 200)
                time.sleep(0.01)
        finally:  # the run's clean-up: its files closed, its stack and results let go, once
            time.sleep(1.0)  # the read of the next tile under way has ended
            closed.append(run.source.name)
        return jobs.Failure("not reached")

    monkeypatch.setattr(widget_module, "fuse_run", slow_fuse_run)
    viewer = make_napari_viewer()
    widget = dock(viewer)
    layer = viewer.add_image(uint16_stack(), name="stack")
    widget.image.value = layer
    widget.method.value = "argmax"

    widget.fuse_button.clicked()
    assert widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=WORKER_TIMEOUT_MS)
    widget.cancel_button.clicked()
    wait(qtbot, widget)

    assert names(viewer) == ["stack"]
    assert "Cancelled" in widget.status.value
    assert widget.fuse_button.enabled and not widget.cancel_button.enabled
    assert not widget.height_button.enabled
    assert activity[0] not in type(activity[0])._all_instances  # the activity entry is closed
    assert activity[0].n < 200
    assert closed == []  # the window is free while the run's clean-up waits, off its thread
    qtbot.waitUntil(lambda: closed == ["stack"], timeout=WORKER_TIMEOUT_MS)  # not left suspended


def test_height_view_adds_surface(make_napari_viewer, qtbot, notifications):
    from napari.layers import Surface

    viewer = make_napari_viewer()
    widget = dock(viewer)
    layer = viewer.add_image(
        uint16_stack((5, 300, 90)), name="stack", scale=(2.0, 0.5, 0.5), translate=(4, 0, 0)
    )
    fuse_layer(qtbot, widget, layer)
    widget.height_button.clicked()

    surface = viewer.layers["stack height view"]
    assert isinstance(surface, Surface)
    step = auto_step((300, 90))
    n_rows, n_cols = len(range(0, 300, step)), len(range(0, 90, step))
    vertices, faces, _ = surface.data
    assert len(vertices) == n_rows * n_cols  # one vertex per sampled pixel
    assert len(faces) == 2 * (n_rows - 1) * (n_cols - 1)
    assert surface.vertex_colors.shape == (len(vertices), 4)
    focus = viewer.layers["stack focus map"].data
    assert vertices[:, 0].max() <= focus.max() + 1e-3  # physical z: the focus map's units
    np.testing.assert_allclose(surface.translate, (4, 0, 0))
    np.testing.assert_allclose(vertices[:, 1].max(), (n_rows - 1) * step * 0.5)
    assert viewer.dims.ndisplay == 3

    # Pressing it again replaces the view rather than adding another.
    widget.relief.value = 3.0
    widget.height_button.clicked()
    assert names(viewer).count("stack height view") == 1
    assert notifications == []


def test_samples_open(make_napari_viewer):
    viewer = make_napari_viewer()
    (diatom,) = viewer.open_sample("napari-pdmfuse", "diatom")
    assert diatom.name == DIATOM_NAME
    assert diatom.rgb and diatom.data.shape == (3, 229, 305, 3)
    assert "MFusionJ" in diatom.metadata["credit"]

    (keyboard,) = viewer.open_sample("napari-pdmfuse", "keyboard")
    assert keyboard.name == KEYBOARD_NAME
    assert keyboard.rgb and keyboard.data.shape == (32, 360, 640, 3)
    assert keyboard.data.dtype == np.uint8
    assert "OpenFocus" in keyboard.metadata["credit"]

    stack, truth, depth = viewer.open_sample("napari-pdmfuse", "rendered")
    assert stack.name == RENDERED_NAME
    assert stack.rgb and stack.data.shape == (12, 256, 256, 3) and stack.data.dtype == np.uint8
    assert truth.name == "truth (sharp)" and truth.data.shape == (256, 256, 3)
    assert depth.name == "truth depth" and depth.colormap.name == "turbo"
    assert depth.data.shape == (256, 256)
    assert depth.data.min() >= 0 and depth.data.max() <= 11


def test_sample_fuses_rgb_with_pdmnet_and_screenshot(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample("napari-pdmfuse", "diatom")
    widget = dock(viewer)
    widget.device.value = "cpu"
    fuse_layer(qtbot, widget, layer, method="pdmnet")

    assert notifications == []
    fused = viewer.layers[f"{DIATOM_NAME} fused"]
    assert fused.rgb
    assert fused.data.shape == (229, 305, 3)
    assert fused.data.dtype == np.uint8
    assert fused.metadata["method"] == "pdmnet"
    assert viewer.layers[f"{DIATOM_NAME} focus map"].data.shape == (229, 305)

    path = tmp_path / "viewer.png"
    viewer.screenshot(path=str(path), canvas_only=False)
    assert path.stat().st_size > 1000


def test_reader_opens_ome_tiff_and_focus_map_is_physical(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    path = tmp_path / "cells.ome.tif"
    metadata = {"axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 1.5}
    tifffile.imwrite(path, uint16_stack((4, 48, 48)), ome=True, tile=(16, 16), metadata=metadata)
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(path), plugin="napari-pdmfuse")
    assert hasattr(layer.data, "dask")
    np.testing.assert_allclose(layer.scale, (1.5, 0.2, 0.2))

    widget = dock(viewer)
    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    focus = viewer.layers["cells focus map"]
    assert focus.metadata["focus_unit"] == "µm"
    assert focus.data.max() <= 3 * 1.5 + 1e-4
    np.testing.assert_allclose(focus.scale, (0.2, 0.2))
    assert str(focus.units[0]) == "micrometer"

    # Saved with the plugin's writer, the focus map keeps its pixel size.
    out = tmp_path / "focus.ome.tif"
    viewer.layers.selection = {focus}
    viewer.layers.save(str(out), selected=True, plugin="napari-pdmfuse")
    with tifffile.TiffFile(out) as tif:
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
    assert pixels["PhysicalSizeX"] == pytest.approx(0.2)
    assert pixels["PhysicalSizeXUnit"] == "µm"


def test_open_stack_button_opens_lazily_and_selects_the_source(
    make_napari_viewer, qtbot, tmp_path, notifications
):
    path = tmp_path / "cells.tif"
    cells = uint16_stack((4, 2, 48, 48))  # an ImageJ hyperstack: Z, C, Y, X
    metadata = {"axes": "ZCYX", "spacing": 2.0, "unit": "um"}
    tifffile.imwrite(path, cells, imagej=True, resolution=(5.0, 5.0), metadata=metadata)
    viewer = make_napari_viewer()
    widget = dock(viewer)
    widget.mode.value = "planes"
    asked = []
    widget.choose_path = lambda: asked.append(1) or str(path)  # the file dialog's answer

    widget.open_button.clicked()

    assert asked == [1] and notifications == []
    layer = viewer.layers["cells"]
    assert hasattr(layer.data, "dask")  # read lazily, by the plugin's reader
    assert layer.axis_labels == ("z", "c", "y", "x")
    np.testing.assert_allclose(layer.scale, (2.0, 1.0, 0.2, 0.2))
    assert widget.mode.value == "stack"
    assert widget.image.value is layer
    assert widget.z_axis.value == 0 and widget.channel_axis.value == 1
    assert "cells" in widget.status.value

    fuse_layer(qtbot, widget, layer)
    assert notifications == []
    assert viewer.layers["cells fused"].data.shape == (2, 48, 48)


def test_open_stack_button_folder_refusal_and_cancel(make_napari_viewer, tmp_path, notifications):
    planes = tmp_path / "planes"
    planes.mkdir()
    for k in range(3):
        tifffile.imwrite(planes / f"z{k}.tif", uint16_stack((32, 40), seed=k))
    viewer = make_napari_viewer()
    widget = dock(viewer)

    widget.choose_path = lambda: planes
    widget.open_button.clicked()
    assert widget.image.value is viewer.layers["planes"]
    assert viewer.layers["planes"].data.shape == (3, 32, 40)

    widget.choose_path = lambda: None  # cancelled: nothing happens
    widget.open_button.clicked()
    assert len(viewer.layers) == 1 and notifications == []

    widget.choose_path = lambda: planes / "z0.tif"  # one plane is no stack: said, not added
    widget.open_button.clicked()
    assert len(viewer.layers) == 1
    assert len(notifications) == 1 and "single 2-D image" in notifications[0]


def test_open_dialog_takes_stack_folders_and_files(qtbot, tmp_path):
    from napari_pdmfuse.viewer.open_dialog import StackDialog

    planes, other = tmp_path / "planes", tmp_path / "other"
    planes.mkdir()
    other.mkdir()
    for k in range(2):
        tifffile.imwrite(planes / f"z{k}.tif", uint16_stack((8, 8), seed=k))

    def choose(path):
        dialog = StackDialog(directory=str(tmp_path))
        qtbot.addWidget(dialog)
        dialog.selectFile(str(path))
        dialog.accept()
        return dialog.chosen, dialog.result()

    assert choose(planes) == (planes, 1)  # a folder of planes is taken, not entered
    assert choose(planes / "z1.tif") == (planes / "z1.tif", 1)
    assert choose(other) == (None, 0)  # any other folder is entered


def test_napari_reader_question_offers_the_plugin_first(qtbot, tmp_path):
    # What File ▸ Open shows for a TIFF until a choice is remembered (README, docs/napari.md).
    import npe2
    from napari._qt.dialogs.qt_reader_dialog import QtReaderDialog
    from napari.plugins import _npe2

    npe2.PluginManager.instance().discover()
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, uint16_stack())
    dialog = QtReaderDialog(pth=str(path), readers=_npe2.get_readers(str(path)))
    qtbot.addWidget(dialog)
    assert [b.text() for b in dialog.reader_btn_group.buttons()] == ["PDM Fuse", "napari builtins"]
    assert dialog._get_plugin_choice() == "PDM Fuse"  # already chosen: OK opens it lazily
    # Remembering the choice for an .ome.tif saves it for every .tif.
    assert dialog.persist_checkbox.text().endswith("files with a .tif extension")


def test_manifest_validates():
    run = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-pdmfuse", "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    ("modules", "banned"),
    [
        # Scripts and headless workers use these without napari.
        (
            "_reader, _writer, viewer.height_view, viewer.jobs, viewer.samples, viewer.sources, "
            "viewer.retouching, retouch, meshes, review",
            "napari magicgui vispy qtpy PyQt5 PyQt6 PySide2 PySide6",
        ),
        # The result layers need napari, not Qt: they work in a headless viewer model too.
        ("viewer.layers", "qtpy PyQt5 PyQt6 PySide2 PySide6"),
    ],
)
def test_modules_import_no_gui(modules, banned):
    imports = "; ".join(f"import napari_pdmfuse.{m}" for m in modules.split(", "))
    code = (
        f"import sys; {imports}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {banned.split()!r}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


# ---------------------------------------------------------------------------------------------
# Time points, channel options and alignment


def time_lapse(size=64):
    """(T, Z, Y, X) uint16: two rendered specimens, one per time point."""
    from napari_pdmfuse.training.rendering import demo_stack

    return np.stack([demo_stack(4, size, seed=s).stack for s in (1, 2)])


def test_time_axis_keeps_t_in_the_results(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = time_lapse()
    layer = viewer.add_image(
        data, name="lapse", axis_labels=("t", "z", "y", "x"), scale=(5.0, 1.0, 0.5, 0.5)
    )
    widget.image.value = layer
    assert widget.z_axis.value == 1
    assert widget.time_axis.value == 0  # labelled t: not taken for channels
    assert widget.channel_axis.value == -1
    assert shown(widget.time_axis) and not shown(widget.channel_mode)
    assert widget.align.value == "off" and shown(widget.align)

    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    fused = viewer.layers["lapse fused"]
    focus = viewer.layers["lapse focus map"]
    assert fused.data.shape == (2, 64, 64) and fused.data.dtype == np.uint16
    assert focus.data.shape == viewer.layers["lapse confidence"].data.shape == (2, 64, 64)
    np.testing.assert_allclose(fused.scale, (5.0, 0.5, 0.5))
    assert tuple(fused.axis_labels) == ("t", "y", "x")
    for t in range(2):
        alone = fuse(data[t], method="argmax")
        np.testing.assert_array_equal(fused.data[t], alone.fused)
        np.testing.assert_array_equal(focus.data[t], alone.focus_map)
    assert "lapse coverage" not in names(viewer)  # not aligned

    # The height view shows the time point the viewer shows. napari lines layers up by their
    # last axes, so the results' T is the viewer's second-to-last slider here.
    viewer.dims.set_point(viewer.dims.ndim - 3, 5.0)  # t = 1 at the results' T scale of 5
    from napari_pdmfuse.viewer.layers import shown_planes

    focus_map, *_ = shown_planes(viewer, widget.last)
    np.testing.assert_array_equal(focus_map, widget.last.result.focus_map[1])
    widget.height_button.clicked()
    assert "lapse height view" in names(viewer)
    assert notifications == []


def test_align_adds_hidden_coverage_and_reports(make_napari_viewer, qtbot, notifications):
    infos: list[str] = []
    original = widget_module.show_info
    widget_module.show_info = lambda message: (infos.append(message), original(message))
    try:
        viewer = make_napari_viewer()
        widget = dock(viewer)
        layer = viewer.add_image(time_lapse(96), name="lapse", axis_labels=("t", "z", "y", "x"))
        widget.image.value = layer
        widget.align.value = "similarity"
        fuse_layer(qtbot, widget, layer)
    finally:
        widget_module.show_info = original

    assert notifications == []
    coverage = viewer.layers["lapse coverage"]
    assert not coverage.visible
    assert coverage.data.shape == (2, 96, 96) and coverage.data.max() == 1
    assert viewer.layers["lapse fused"].data.shape == (2, 96, 96)
    assert "Aligned: shifts up to" in widget.status.value
    assert "% of the field" in widget.status.value
    assert len(infos) == 1 and "Time point 1" in infos[0] and "dy (px)" in infos[0]
    assert "dy (px)" in coverage.metadata["alignment"]

    # Fusing again without alignment removes the coverage, which no longer describes the result.
    widget.align.value = "off"
    fuse_layer(qtbot, widget, layer)
    assert "lapse coverage" not in names(viewer)


def test_channel_mode_and_focus_channel(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = np.stack([time_lapse()[0], time_lapse()[1]], axis=1)  # (Z, C, Y, X)
    layer = viewer.add_image(data, name="cells", axis_labels=("z", "c", "y", "x"))
    widget.image.value = layer
    assert widget.channel_axis.value == 1 and widget.time_axis.value == -1
    assert shown(widget.channel_mode) and shown(widget.focus_channel)
    assert list(widget.focus_channel.choices) == [-1, 0, 1]

    widget.focus_channel.value = 1
    fuse_layer(qtbot, widget, layer)
    assert notifications == []
    np.testing.assert_array_equal(
        viewer.layers["cells focus map"].data, fuse(data[:, 1], method="argmax").focus_map
    )
    assert viewer.layers["cells fused"].data.shape == (2, 64, 64)

    widget.channel_mode.value = "separate"
    assert not widget.focus_channel.enabled
    fuse_layer(qtbot, widget, layer)
    focus = viewer.layers["cells focus map"]
    assert focus.data.shape == (2, 64, 64) and tuple(focus.axis_labels) == ("c", "y", "x")
    np.testing.assert_array_equal(focus.data[0], fuse(data[:, 0], method="argmax").focus_map)


def test_brightness_correction_from_the_widget(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    lamp = np.float32([1.0, 1.3, 0.8, 1.1])[:, None, None]
    flickering = (uint16_stack((4, 64, 64)) * lamp).astype(np.uint16)
    layer = viewer.add_image(flickering, name="stack")
    widget.brightness.value = True
    fuse_layer(qtbot, widget, layer)
    assert notifications == []
    expected = fuse(flickering, method="argmax", correct_brightness=True).fused
    np.testing.assert_array_equal(viewer.layers["stack fused"].data, expected)
    assert not np.array_equal(expected, fuse(flickering, method="argmax").fused)


# ---------------------------------------------------------------------------------------------
# Axes from labels and shapes; results streamed into OME-Zarr stores


def test_length_one_axes_are_skipped_without_touching_any_setting(
    make_napari_viewer, qtbot, notifications
):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = uint16_stack((1, 2, 5, 64, 64))  # as a bioio reader opens a CZI: (T=1, C, Z, Y, X)
    layer = viewer.add_image(data, name="czi", axis_labels=("t", "c", "z", "y", "x"))
    widget.image.value = layer
    assert (widget.z_axis.value, widget.channel_axis.value, widget.time_axis.value) == (2, 1, -1)

    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    fused = viewer.layers["czi fused"]
    expected = fuse(data[0], axes="CZYX", method="argmax")
    assert fused.data.shape == (2, 64, 64) and tuple(fused.axis_labels) == ("c", "y", "x")
    np.testing.assert_array_equal(fused.data, expected.fused)
    np.testing.assert_array_equal(viewer.layers["czi focus map"].data, expected.focus_map)

    # Without labels, Z is the first axis longer than 1.
    plain = viewer.add_image(uint16_stack((1, 5, 32, 32)), name="plain")
    widget.image.value = plain
    assert widget.z_axis.value == 1 and widget.time_axis.value == -1


@pytest.fixture
def stream_everything(monkeypatch, tmp_path):
    """Every result streams into OME-Zarr stores, however small, in folders under tmp_path."""
    monkeypatch.setattr(jobs, "STREAM_BYTES", 0)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_large_result_streams_into_multiscale_layers(
    make_napari_viewer, qtbot, notifications, stream_everything
):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = uint16_stack((3, 700, 600))
    layer = viewer.add_image(data, name="big", scale=(1.0, 0.5, 0.5))
    widget.tile.value = 256
    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    expected = fuse(data, method="argmax")
    fused, focus = viewer.layers["big fused"], viewer.layers["big focus map"]
    confidence = viewer.layers["big confidence"]
    for result_layer in (fused, focus, confidence):
        assert result_layer.multiscale
        assert not result_layer.cache  # napari's cache keeps no copy, even once deleted
        assert [level.shape for level in result_layer.data] == [(700, 600), (350, 300)]
        np.testing.assert_allclose(result_layer.scale, (0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(fused.data[0]), expected.fused)
    np.testing.assert_array_equal(np.asarray(focus.data[0]), expected.focus_map)
    np.testing.assert_array_equal(np.asarray(confidence.data[0]), expected.confidence)
    assert fused.data[0].dtype == np.uint16 and focus.metadata["focus_unit"] == "slices"
    halved = expected.fused.reshape(350, 2, 300, 2).mean(axis=(1, 3))
    np.testing.assert_array_equal(np.asarray(fused.data[1]), np.rint(halved))  # the pyramid
    store = Path(fused.metadata["store"])
    assert store.name == "fused.ome.zarr" and store.parent.name.startswith("pdmfuse-")
    assert store.parent.parent == stream_everything  # the system's temporary directory
    assert str(store.parent) in widget.status.value
    widget.height_button.clicked()  # drawn from the coarsest level
    assert "big height view" in names(viewer)

    # Fused again in memory, the layers become plain ones and the stores are deleted.
    viewer.layers.remove("big height view")
    jobs.STREAM_BYTES = 2**30
    fuse_layer(qtbot, widget, layer)
    assert not viewer.layers["big fused"].multiscale
    assert not store.parent.exists()


def test_streamed_rgb_and_time_lapse(make_napari_viewer, qtbot, notifications, stream_everything):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    rgb = np.random.default_rng(3).integers(0, 255, (4, 64, 80, 3), dtype=np.uint8)
    layer = viewer.add_image(rgb, name="colour")
    fuse_layer(qtbot, widget, layer)
    fused = viewer.layers["colour fused"]
    assert fused.multiscale and fused.rgb and fused.data[0].shape == (64, 80, 3)
    np.testing.assert_array_equal(np.asarray(fused.data[0]), fuse(rgb, method="argmax").fused)

    data = time_lapse()
    lapse = viewer.add_image(data, name="lapse", axis_labels=("t", "z", "y", "x"))
    fuse_layer(qtbot, widget, lapse)
    assert notifications == []
    focus = viewer.layers["lapse focus map"]
    assert focus.multiscale and tuple(focus.axis_labels) == ("t", "y", "x")
    for t in range(2):
        alone = fuse(data[t], method="argmax")
        np.testing.assert_array_equal(np.asarray(focus.data[0][t]), alone.focus_map)


def test_removed_streamed_results_let_go_of_their_source(
    make_napari_viewer, qtbot, tmp_path, notifications, stream_everything
):
    # Many fusions in one session: once the user has removed a streamed run's layers and
    # fused another stack, nothing holds the first stack or its file open any more.
    import psutil

    viewer = make_napari_viewer()
    widget = dock(viewer)
    paths = [tmp_path / "first.tif", tmp_path / "second.tif"]
    folders = []
    for k, path in enumerate(paths):
        tifffile.imwrite(path, uint16_stack(seed=k), tile=(32, 32))  # read through an open file
        widget.open_path(path)
        widget.fuse_button.clicked()
        wait(qtbot, widget)
        folders.append(Path(viewer.layers[f"{path.stem} fused"].metadata["store"]).parent)
        viewer.layers.select_all()
        viewer.layers.remove_selected()
    gc.collect()
    assert notifications == []
    assert str(paths[0]) not in {f.path for f in psutil.Process().open_files()}
    assert all(folder.is_dir() for folder in folders)  # kept until fused again (docs)


def test_failed_streamed_run_removes_its_layers_and_stores(
    make_napari_viewer, qtbot, notifications, stream_everything
):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    data = uint16_stack((5, 64, 600)).astype(np.float32)
    data[2, 10, 500] = np.nan  # found in the last tile, after the layers were added
    layer = viewer.add_image(data, name="nan")
    widget.tile.value = 256
    fuse_layer(qtbot, widget, layer)
    assert len(notifications) == 1 and "NaN" in notifications[0]
    assert names(viewer) == ["nan"]
    assert not list(stream_everything.glob("pdmfuse-*"))


def test_cancelled_streamed_run_removes_its_layers_and_stores(
    make_napari_viewer, qtbot, monkeypatch, stream_everything
):
    write = jobs.PreviewedOutputs.write

    def slow_write(self, part, tile, result):
        write(self, part, tile, result)
        time.sleep(0.2)

    monkeypatch.setattr(jobs.PreviewedOutputs, "write", slow_write)
    viewer = make_napari_viewer()
    widget = dock(viewer)
    layer = viewer.add_image(uint16_stack((3, 600, 600)), name="stack")
    widget.image.value = layer
    widget.method.value = "argmax"
    widget.tile.value = 256
    widget.fuse_button.clicked()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=WORKER_TIMEOUT_MS)
    assert viewer.layers["stack fused"].multiscale  # shown while it fills in
    widget.cancel_button.clicked()
    wait(qtbot, widget)
    assert names(viewer) == ["stack"]
    assert "Cancelled" in widget.status.value
    assert not list(stream_everything.glob("pdmfuse-*"))
