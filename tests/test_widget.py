"""The napari plugin end to end: manifest, dock widget, worker, result layers, sample data.

Runs a real napari viewer under Xvfb (pytest-xvfb); the tests use method="wavelet" so they do not
depend on PDMNet's weights.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from napari_pdmfuse import Progress, fuse
from napari_pdmfuse._sample_data import DIATOM_NAME

WORKER_TIMEOUT_MS = 60_000


@pytest.fixture
def notifications(monkeypatch):
    """Messages the widget shows with napari's show_error."""
    from napari_pdmfuse import _widget

    shown: list[str] = []
    original = _widget.show_error

    def record(message: str) -> None:
        shown.append(message)
        original(message)

    monkeypatch.setattr(_widget, "show_error", record)
    return shown


def dock(viewer):
    _, widget = viewer.window.add_plugin_dock_widget("napari-pdmfuse", "PDM Fuse")
    return widget


def fuse_layer(qtbot, widget, layer, method="wavelet"):
    widget.image.value = layer
    widget.method.value = method
    widget.fuse_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WORKER_TIMEOUT_MS)


def uint16_stack(shape=(5, 64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, shape, dtype=np.uint16)


def test_widget_fuses_layer_and_rerun_replaces(make_napari_viewer, qtbot, notifications):
    viewer = make_napari_viewer()
    widget = dock(viewer)
    assert widget.method.value == "pdmnet"  # the default, though the tests run wavelet
    assert widget.method.choices == ("pdmnet", "wavelet", "pyramid", "argmax")
    source = viewer.add_image(
        uint16_stack(), name="stack", scale=(2.0, 0.5, 0.25), translate=(0, 10, 20)
    )
    source.colormap = "magma"
    source.contrast_limits = (100, 3000)

    fuse_layer(qtbot, widget, source)

    assert notifications == []
    names = [layer.name for layer in viewer.layers]
    assert names == ["stack", "stack confidence", "stack focus map", "stack fused"]
    fused = viewer.layers["stack fused"]
    focus = viewer.layers["stack focus map"]
    confidence = viewer.layers["stack confidence"]
    assert fused.data.shape == (64, 64)
    assert fused.data.dtype == np.uint16
    assert fused.colormap.name == "magma"
    assert tuple(fused.contrast_limits) == (100, 3000)
    np.testing.assert_allclose(fused.scale, (0.5, 0.25))
    np.testing.assert_allclose(fused.translate, (10, 20))
    assert focus.data.shape == (64, 64)
    assert focus.data.dtype == np.float32
    assert focus.colormap.name == "turbo"
    np.testing.assert_allclose(focus.scale, (0.5, 0.25))
    assert not confidence.visible
    assert confidence.data.shape == (64, 64)
    np.testing.assert_array_equal(fused.data, fuse(source.data, method="wavelet").fused)
    assert widget.progress.value == widget.progress.max

    # A second run on the same source updates the result layers in place.
    source.data = uint16_stack(seed=1)
    fuse_layer(qtbot, widget, source)
    assert [layer.name for layer in viewer.layers] == names
    assert viewer.layers["stack fused"] is fused
    np.testing.assert_array_equal(fused.data, fuse(source.data, method="wavelet").fused)


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
    assert [layer.name for layer in viewer.layers] == ["flat"]


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
    assert [layer.name for layer in viewer.layers] == ["nan"]
    assert widget.fuse_button.enabled


def test_cancel_leaves_viewer_unchanged(make_napari_viewer, qtbot, monkeypatch):
    from napari_pdmfuse import _widget

    def slow_fuse_iter(data, **options):
        for done in range(200):
            yield Progress(done, 200)
            time.sleep(0.01)
        return fuse(data, method="wavelet")

    monkeypatch.setattr(_widget, "fuse_iter", slow_fuse_iter)
    viewer = make_napari_viewer()
    widget = dock(viewer)
    layer = viewer.add_image(uint16_stack(), name="stack")
    widget.image.value = layer
    widget.method.value = "wavelet"

    widget.fuse_button.clicked()
    assert widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=WORKER_TIMEOUT_MS)
    widget.cancel_button.clicked()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=WORKER_TIMEOUT_MS)

    assert [layer.name for layer in viewer.layers] == ["stack"]
    assert "Cancelled" in widget.status.value
    assert widget.fuse_button.enabled and not widget.cancel_button.enabled


def test_sample_fuses_rgb_and_screenshot(make_napari_viewer, qtbot, tmp_path, notifications):
    viewer = make_napari_viewer()
    (layer,) = viewer.open_sample("napari-pdmfuse", "diatom")
    assert layer.name == DIATOM_NAME
    assert layer.rgb
    assert layer.data.shape == (3, 229, 305, 3)
    assert layer.data.dtype == np.uint8
    assert "MFusionJ" in layer.metadata["credit"]

    widget = dock(viewer)
    fuse_layer(qtbot, widget, layer)

    assert notifications == []
    fused = viewer.layers[f"{DIATOM_NAME} fused"]
    assert fused.rgb
    assert fused.data.shape == (229, 305, 3)
    assert fused.data.dtype == np.uint8
    assert viewer.layers[f"{DIATOM_NAME} focus map"].data.shape == (229, 305)

    path = tmp_path / "viewer.png"
    viewer.screenshot(path=str(path), canvas_only=False)
    assert path.stat().st_size > 1000


def test_manifest_validates():
    run = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", "napari-pdmfuse", "--imports"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_core_and_sample_imports_are_qt_free():
    code = (
        "import sys, napari_pdmfuse, napari_pdmfuse._sample_data; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'magicgui', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'vispy'}); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
