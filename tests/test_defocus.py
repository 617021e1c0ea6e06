"""Stacks composed from real defocus series: exact truth on whole planes, interpolation between
real offsets, tuning and reporting parts apart, and the series registered as read."""

import numpy as np
import pytest
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from napari_pdmfuse.training import defocus

pytestmark = pytest.mark.skipif(
    not all((defocus.data_root() / name).is_dir() for name in defocus.SERIES),
    reason=f"the real defocus series are not in {defocus.data_root()} (set $PDMFUSE_DATA)",
)


@pytest.fixture(scope="module", params=defocus.SERIES)
def series(request):
    return defocus.load_series(request.param)


def test_a_pixel_on_a_plane_is_the_in_focus_image_there(series):
    depth = np.zeros((24, 32), np.float32)
    depth[:, 16:] = 3  # a step: the left half in focus in plane 0, the right half in plane 3
    depth[:12, :8] = 1.5  # between planes: in focus in none
    out = defocus.compose(series, depth, series.spacing_um, "report", origin=(40, 200))
    assert out.stack.shape[:3] == (4, 24, 32) and out.stack.dtype == series.dtype
    focus = out.truth
    np.testing.assert_array_equal(out.stack[0][12:, :16], focus[12:, :16])
    np.testing.assert_array_equal(out.stack[3][:, 16:], focus[:, 16:])
    assert not np.array_equal(out.stack[3][:, :16], focus[:, :16])  # plane 3 is 3 steps away
    rows, cols = defocus.region(series, "report")
    np.testing.assert_array_equal(
        out.truth,
        series.focus[rows.start + 40 : rows.start + 64, cols.start + 200 : cols.start + 232],
    )


def test_planes_between_real_offsets_are_interpolated_linearly(series):
    offsets, k = series.offsets_um, series.focus_index
    depth = np.full((8, 8), 1.0, np.float32)
    # Plane 0 at depth 1 is one step before focus: a quarter of the way to the next real offset.
    step = 0.25 * (offsets[k] - offsets[k - 1])
    out = defocus.compose(series, depth, step, "tune", origin=(10, 10), n_planes=2)
    rows, cols = defocus.region(series, "tune")
    crop = series.images[:, rows.start + 10 : rows.start + 18, cols.start + 10 : cols.start + 18]
    expected = np.rint(0.75 * crop[k] + 0.25 * crop[k - 1])
    np.testing.assert_array_equal(out.stack[0], expected.astype(series.dtype))
    # Beyond the farthest real offset, the farthest image.
    far = defocus.compose(series, depth, 100.0, "tune", origin=(10, 10), n_planes=2)
    np.testing.assert_array_equal(far.stack[0], crop[0].astype(series.dtype))
    np.testing.assert_array_equal(far.stack[1], crop[k].astype(series.dtype))


def test_tune_and_report_parts_are_disjoint_and_hold_content(series):
    shape = series.focus.shape[:2]
    masks = {}
    for part in ("tune", "report"):
        masks[part] = np.zeros(shape, bool)
        masks[part][defocus.region(series, part)] = True
        assert defocus.textured(series, series.focus[defocus.region(series, part)]).mean() > 0.02
    assert not (masks["tune"] & masks["report"]).any()
    with pytest.raises(ValueError, match="does not fit"):
        defocus.compose(series, np.zeros((900, 8), np.float32), 1.0, "tune")


def test_random_composites_are_seeded_and_within_their_part(series):
    a = defocus.random_composite(np.random.default_rng(3), series, "tune", 64)
    b = defocus.random_composite(np.random.default_rng(3), series, "tune", 64)
    np.testing.assert_array_equal(a.stack, b.stack)
    assert 5 <= len(a.stack) <= 9 and a.stack.shape[1:3] == (64, 64)
    assert a.depth.min() >= 0 and a.depth.max() <= len(a.stack) - 1
    assert a.textured.any()


def test_series_are_registered_as_read(series):
    """Every image lines up with the in-focus one within a third of a pixel on its content."""
    rows, cols = defocus.region(series, "report")
    grey = series.images.mean(-1) if series.images.ndim == 4 else series.images
    k = series.focus_index
    detail = defocus.textured(series, series.focus[rows, cols])
    ys, xs = np.nonzero(detail)
    y0, x0 = int(np.median(ys)) + rows.start, int(np.median(xs)) + cols.start
    window = (slice(max(y0 - 128, 0), y0 + 128), slice(max(x0 - 128, 0), x0 + 128))
    for near in (k - 1, k + 1):
        shift = phase_cross_correlation(grey[k][window], grey[near][window], upsample_factor=20)[0]
        assert np.abs(shift).max() < 0.34, (series.offsets_um[near], shift)


def test_the_focus_truth_follows_the_specimens_relief(series):
    """A pixel of layout depth d that the series shows sharpest at offset δ is sharpest in
    plane d + δ / step of a composed stack: that is its truth (the wafer is flat: none)."""
    if series.relief_um is None:
        assert series.name.startswith("wafer")
        return
    rng = np.random.default_rng(2)  # flips the crop both ways: the relief must follow
    layout = np.full((96, 96), 4.0, np.float32)
    step = series.spacing_um
    out = defocus.compose(series, layout, step, "report", (150, 200), rng=rng, n_planes=9)
    energy = [
        ndimage.gaussian_filter(
            (ndimage.gaussian_filter(p, 1.0) - ndimage.gaussian_filter(p, 2.0)) ** 2, 4.0
        )
        for p in out.stack.astype(np.float32)
    ]
    sharpest = np.argmax(energy, 0)[out.textured]
    with_relief = np.abs(sharpest - out.depth[out.textured]).mean()
    without = np.abs(sharpest - layout[out.textured]).mean()
    assert np.ptp(out.depth[out.textured]) > 1  # the cell is not flat at 0.15 µm
    assert with_relief < 0.6 * without
