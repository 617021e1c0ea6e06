"""The 3-D height view's geometry, without a viewer: vertices, faces, colours, smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from napari_pdmfuse.viewer.height_view import (
    MAX_SIDE,
    auto_step,
    colours,
    grid_faces,
    height_surface,
    smooth_focus,
)


def test_one_vertex_per_sampled_pixel_in_world_units():
    focus = np.tile(np.arange(31, dtype=np.float32), (7, 1))  # a ramp along X: 0 … 30 slices
    fused = np.full((7, 31), 100, np.uint16)
    vertices, faces, colors = height_surface(
        focus, fused, None, step=3, z_scale=2.0, yx_scale=(0.5, 0.25)
    )
    rows, cols = list(range(0, 7, 3)), list(range(0, 31, 3))
    n_cols = len(cols)
    assert vertices.shape == (len(rows) * n_cols, 3)
    assert vertices.dtype == np.float32
    # Numbered row by row: (z, y, x) with z = focus × z_scale, y = row × 0.5, x = col × 0.25.
    np.testing.assert_allclose(vertices[:n_cols, 1], 0.0)
    np.testing.assert_allclose(vertices[:n_cols, 2], np.array(cols) * 0.25)
    np.testing.assert_allclose(vertices[::n_cols, 1], [0, 1.5, 3.0])
    # A linear ramp survives the smoothing away from the edges.
    np.testing.assert_allclose(vertices[3:8, 0], np.array(cols[3:8]) * 2.0, atol=1e-3)
    assert faces.shape == (2 * (len(rows) - 1) * (n_cols - 1), 3)
    assert faces.min() == 0 and faces.max() == len(vertices) - 1
    assert colors.shape == (len(vertices), 4)
    np.testing.assert_allclose(colors[:, 3], 1.0)


def test_auto_step_caps_the_grid():
    assert auto_step((100, 200)) == 1
    assert auto_step((1000, 300)) == 4  # ceil(1000 / 256)
    focus = np.zeros((600, 1100), np.float32)
    vertices, _, _ = height_surface(focus, np.zeros((600, 1100, 3), np.uint8))
    step = auto_step(focus.shape)
    n_rows, n_cols = len(range(0, 600, step)), len(range(0, 1100, step))
    assert max(n_rows, n_cols) <= MAX_SIDE
    assert len(vertices) == n_rows * n_cols


def test_grid_faces_are_two_triangles_per_cell_with_consistent_winding():
    faces = grid_faces(2, 2)
    assert sorted(map(tuple, faces)) == [(0, 2, 1), (1, 2, 3)]
    vertices = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1]], np.float32)
    normals = [np.cross(vertices[b] - vertices[a], vertices[c] - vertices[a]) for a, b, c in faces]
    assert np.sign(normals[0][0]) == np.sign(normals[1][0]) != 0


def test_low_confidence_pixels_take_their_neighbours_height():
    focus = np.full((40, 40), 5.0, np.float32)
    confidence = np.ones((40, 40), np.float32)
    focus[18:22, 18:22] = 0.0  # a noisy estimate in a blank patch …
    confidence[18:22, 18:22] = 0.0  # … that the fusion was not sure of
    smooth = smooth_focus(focus, confidence, sigma=2.0)
    assert smooth[20, 20] == pytest.approx(5.0, abs=1e-3)
    plain = smooth_focus(focus, None, sigma=2.0)
    assert plain[20, 20] < 3.0


def test_no_confidence_anywhere_falls_back_to_plain_smoothing():
    focus = np.random.default_rng(0).random((30, 30)).astype(np.float32)
    smooth = smooth_focus(focus, np.zeros_like(focus))
    assert np.isfinite(smooth).all()
    np.testing.assert_allclose(smooth, smooth_focus(focus, None), atol=1e-6)


def test_colours_keep_rgb_and_grey_uses_contrast_limits():
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 0] = (255, 0, 0)
    rgb[1, 1] = (0, 0, 255)
    out = colours(rgb, rgb=True, contrast_limits=(0, 255))
    np.testing.assert_allclose(out[0, 0], [1, 0, 0, 1])
    np.testing.assert_allclose(out[1, 1], [0, 0, 1, 1])
    grey = np.array([[0, 500], [1000, 2000]], np.uint16)
    out = colours(grey, contrast_limits=(0, 1000))
    np.testing.assert_allclose(out[..., 0], [[0, 0.5], [1, 1]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="does not match"):
        height_surface(np.zeros((10, 10)), np.zeros((10, 12)))
    with pytest.raises(ValueError, match="2-D"):
        height_surface(np.zeros((2, 10, 10)), np.zeros((10, 10)))
