"""The renderer's optics: what ground-truth stacks look like at depth steps and with aberrations."""

import numpy as np
import pytest

from napari_pdmfuse.training import rendering as render


def disk_on_background(size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured specimen whose central disk lies at plane 1 and the rest at plane 5."""
    sharp = render.brightfield(np.random.default_rng(3), (size, size)).mean(-1)
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    return sharp, np.where(radius < size / 4, 1.0, 5.0).astype(np.float32), radius


def clean(sharp, depth, **optics) -> np.ndarray:
    """Noise-free planes in [0, 1] units (the renderer scales by a drawn level; undo it)."""
    r = render.render_stack(
        sharp, depth, 7, rng=np.random.default_rng(0), photons=1e9, read_noise=0, **optics
    )
    return r.stack / (r.truth.max() / sharp.max())


def test_occlusion_spreads_a_defocused_near_object_over_the_far_one_in_focus():
    sharp, depth, radius = disk_on_background()
    gathered = clean(sharp, depth, psf_kind="disk", blur_per_slice=3.0)
    layered = clean(sharp, depth, psf_kind="disk", blur_per_slice=3.0, occlusion=True)
    rim = (radius > 24 + 2) & (radius < 24 + 8)  # the far background just beside the near disk
    far = radius > 24 + 16
    # Gathering keeps the far plane sharp right up to the step; the layers veil it there.
    np.testing.assert_allclose(gathered[5][rim], sharp[rim], atol=2e-3)
    assert (
        np.abs(layered[5][rim] - sharp[rim]).mean()
        > 10 * np.abs(gathered[5][rim] - sharp[rim]).mean()
    )
    # Away from the step both are the same blur of the same plane.
    np.testing.assert_allclose(layered[5][far], gathered[5][far], atol=2e-3)
    np.testing.assert_allclose(layered[1][radius < 20], gathered[1][radius < 20], atol=2e-3)


def test_occlusion_of_a_flat_specimen_is_the_gather_model():
    sharp, _, _ = disk_on_background()
    flat = np.full(sharp.shape, 2.0, np.float32)
    np.testing.assert_allclose(clean(sharp, flat, occlusion=True), clean(sharp, flat), atol=1e-3)


@pytest.mark.parametrize("kind", render.ABERRATED_PSFS)
def test_aberrated_psfs_differ_above_and_below_focus(kind):
    above, below = render.psf(kind, 3.0, side=1), render.psf(kind, 3.0, side=-1)
    for kernel in (above, below):
        assert kernel.sum() == pytest.approx(1.0)
    if kind == "astigmatic":  # the long axis turns by 90° across focus
        np.testing.assert_allclose(above, below.T, atol=1e-12)
        assert not np.allclose(above, below)
    else:
        assert above.shape != below.shape or not np.allclose(above, below)
    for symmetric in render.PSFS:
        np.testing.assert_array_equal(render.psf(symmetric, 3.0, 1), render.psf(symmetric, 3.0, -1))


def test_halo_fringes_swap_across_focus():
    size = 64
    sharp = np.full((size, size), 0.3, np.float32)
    sharp[:, size // 2 :] = 0.7  # one straight edge
    flat = np.full(sharp.shape, 3.0, np.float32)
    planes = clean(sharp, flat, halo=0.8, blur_per_slice=2.0)
    plain = clean(sharp, flat, blur_per_slice=2.0)
    bright_side = (slice(None), slice(size // 2, size // 2 + 3))
    # Two slices before and after focus: a fringe on the bright side of the edge, of opposite
    # sign on either side of focus; without a halo the two are the same blur.
    before, after = (
        planes[1][bright_side] - plain[1][bright_side],
        planes[5][bright_side] - plain[5][bright_side],
    )
    assert before.mean() * after.mean() < 0
    assert min(abs(before.mean()), abs(after.mean())) > 0.01
    np.testing.assert_allclose(plain[1], plain[5], atol=5e-4)


@pytest.mark.parametrize(
    ("seed", "rgb", "digest"), [(0, False, "9d03f8f72b0dd16a"), (1, True, "c63c6fde9241d265")]
)
def test_training_stacks_render_as_the_shipped_weights_were_trained_on(seed, rgb, digest):
    """The training recipe reproduces the shipped weights only while the renderer's default
    (gather) stacks stay the same bit for bit; new optics must stay opt-in. (A NumPy or SciPy
    release that changes their FFT or random streams moves these too.)"""
    import hashlib

    stack = render.random_stack(np.random.default_rng(seed), (48, 40), rgb=rgb).stack
    assert hashlib.sha256(stack.tobytes()).hexdigest()[:16] == digest


def test_a_dome_is_nearest_at_its_apex_and_flat_around_it():
    depth = render.depth_map(np.random.default_rng(4), (96, 128), 7, kinds=("dome",))
    assert depth.shape == (96, 128) and depth.min() >= 0 and depth.max() <= 6
    apex = np.unravel_index(np.argmin(depth), depth.shape)
    ground = depth == depth.max()  # the flat ground the cap stands on
    assert ground.mean() > 0.05 and not ground[apex]
    # Depth grows with the squared distance from the apex: a paraboloid cap, not a ridge or tilt.
    yy, xx = np.indices(depth.shape)
    distance = np.hypot(yy - apex[0], xx - apex[1])
    cap = ~ground
    assert np.corrcoef(distance[cap] ** 2, depth[cap])[0, 1] > 0.99
