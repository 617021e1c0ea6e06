"""The renderer's optics: what ground-truth stacks look like at depth steps and with aberrations."""

import numpy as np
import pytest

from napari_pdmfuse.training import mix
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.training.optics import (
    ABERRATED_PSFS,
    PSFS,
    Brightfield,
    Fluorescence,
    Reflected,
    acquired,
    z_step_for_blur,
)


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


@pytest.mark.parametrize("kind", ABERRATED_PSFS)
def test_aberrated_psfs_differ_above_and_below_focus(kind):
    above, below = render.psf(kind, 3.0, side=1), render.psf(kind, 3.0, side=-1)
    for kernel in (above, below):
        assert kernel.sum() == pytest.approx(1.0)
    if kind == "astigmatic":  # the long axis turns by 90° across focus
        np.testing.assert_allclose(above, below.T, atol=1e-12)
        assert not np.allclose(above, below)
    else:
        assert above.shape != below.shape or not np.allclose(above, below)
    for symmetric in PSFS:
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


# Physical optics


def bump(size: int = 48, height: float = 0.03) -> np.ndarray:
    """A smooth round relief (µm) in the middle of the field."""
    yy, xx = np.mgrid[:size, :size]
    return (height * np.exp(-0.5 * (np.hypot(yy - size / 2, xx - size / 2) / 3) ** 2)).astype(
        np.float32
    )


def wave_planes(optics, sharp, relief) -> np.ndarray:
    """Seven noise-free planes of a flat specimen at plane 3, in units of the clear field."""
    flat = np.full(sharp.shape, 3.0, np.float32)
    r = render.render_stack(
        sharp, flat, 7, rng=np.random.default_rng(0), photons=1e9, read_noise=0, optics=optics,
        relief=relief,
    )  # fmt: skip
    return r.stack / (r.truth[:4, :4].mean() / sharp[:4, :4].mean())


BRIGHTFIELD = Brightfield(na=0.4, condenser=0.5, pixel=0.4, z_step=z_step_for_blur(2, 0.4, 0.4, 1))


def test_a_phase_object_vanishes_in_focus_and_reverses_contrast_across_it():
    clear = np.ones((48, 48), np.float32)
    planes = wave_planes(BRIGHTFIELD, clear, bump()) - 1
    centre = planes[:, 24, 24]
    assert abs(centre[3]) < 0.003  # in focus: a transparent bump is all but invisible
    for away in (1, 2, 3):  # out of focus: dark on one side, bright on the other
        assert centre[3 - away] * centre[3 + away] < 0
        assert min(abs(centre[3 - away]), abs(centre[3 + away])) > 0.02
    # An absorbing specimen keeps its contrast in focus, where it is sharpest.
    stained = np.where(bump() > 0.015, 0.5, 1.0).astype(np.float32)
    absorbing = wave_planes(BRIGHTFIELD, stained, None)
    assert absorbing[3, 24, 24] == pytest.approx(0.5, abs=0.03)
    assert np.abs(np.diff(absorbing[3], axis=1)).max() > np.abs(np.diff(absorbing[0], axis=1)).max()


def test_an_open_condenser_weakens_phase_contrast():
    clear = np.ones((48, 48), np.float32)
    contrast = [
        np.abs(
            wave_planes(Brightfield(**{**vars(BRIGHTFIELD), "condenser": c}), clear, bump())[1] - 1
        ).max()
        for c in (0.2, 0.9)
    ]
    assert contrast[0] > 1.5 * contrast[1]


def test_reflected_light_sees_height_as_twice_the_path():
    clear = np.ones((48, 48), np.float32)
    settings = {**vars(BRIGHTFIELD), "condenser": 0.3}
    reflected = wave_planes(Reflected(**settings), clear, bump(height=0.01))
    transmitted = wave_planes(Brightfield(**settings), clear, bump(height=0.02))
    np.testing.assert_allclose(reflected, transmitted, atol=1e-3)


FLUORESCENCE = Fluorescence(
    na=0.8, immersion=1.0, sample=1.0, pixel=0.2, z_step=0.6, model="scalar"
)


def fluorescent(sharp, depth, optics=FLUORESCENCE) -> np.ndarray:
    r = render.render_stack(
        sharp, depth, 5, rng=np.random.default_rng(0), photons=1e9, read_noise=0, bits=16,
        optics=optics, levels_per_slice=2,
    )  # fmt: skip
    return r.stack.astype(float) / r.truth.max() * sharp.max(), r.truth / r.truth.max()


def test_fluorescence_haze_adds_the_light_of_every_layer():
    near = np.zeros((48, 48), np.float32)
    near[24, 24] = 1.0  # a bright point at plane 0
    far = np.zeros((48, 48), np.float32)
    far[20:29, 20:29] = 0.2  # a dim patch right behind it at plane 4
    depth = np.where(far > 0, 4.0, 0.0).astype(np.float32)
    both, truth = fluorescent(near + far, depth)
    alone, _ = fluorescent(near, depth)
    # Plane 4: the far patch in focus and, added to it, the near point's defocused light;
    # nothing near hides what lies behind it.
    assert both[4, 24, 24] > both[4, 22, 22] > 0
    assert alone[4, 24, 24] > 0.001
    # The truth is each pixel as the plane through its depth sees it, the haze included.
    assert truth[24, 24] == pytest.approx(1.0)
    assert truth[22, 22] > 0


def test_index_mismatch_makes_the_psf_differ_across_focus():
    matched = FLUORESCENCE.psf(np.array([-2.0, 2.0]))
    np.testing.assert_allclose(matched[0], matched[1], atol=1e-4)
    mismatched = Fluorescence(
        na=1.2, immersion=1.33, sample=1.45, depth=20, pixel=0.13, z_step=0.5, model="scalar"
    ).psf(np.array([-2.0, 0.0, 2.0]))
    assert mismatched.sum(axis=(1, 2)) == pytest.approx(1.0, abs=1e-5)
    assert np.abs(mismatched[0] - mismatched[2]).sum() > 0.2
    # Offsets count from the best focus: the brightest peak is the plane in focus.
    assert mismatched[1].max() > max(mismatched[0].max(), mismatched[2].max())


# Acquisition


def test_acquisition_faults_draw_nothing_unless_asked():
    stack = np.random.default_rng(0).random((4, 24, 20), dtype=np.float32)
    rng = np.random.default_rng(1)
    same = acquired(stack.copy(), rng)
    np.testing.assert_array_equal(same, stack)
    assert rng.random() == np.random.default_rng(1).random()


def test_focus_breathing_scales_about_the_middle_plane_and_bleaching_dims():
    yy, xx = np.mgrid[:41, :41]
    ring = (np.abs(np.hypot(yy - 20, xx - 20) - 12) < 1.5).astype(np.float32)
    stack = acquired(np.stack([ring] * 3), np.random.default_rng(0), magnification=0.1)
    np.testing.assert_allclose(stack[1], ring, atol=1e-6)
    radius = [np.hypot(yy - 20, xx - 20)[p > 0.5].mean() for p in stack]
    assert radius[0] == pytest.approx(12 * 0.9, abs=0.5)
    assert radius[2] == pytest.approx(12 * 1.1, abs=0.5)
    dimmed = acquired(np.ones((3, 8, 8), np.float32), np.random.default_rng(0), bleaching=0.1)
    np.testing.assert_allclose(dimmed[:, 0, 0], [1, 0.9, 0.81], rtol=1e-6)


def test_uneven_illumination_wanders_from_plane_to_plane():
    stack = acquired(np.ones((3, 32, 32), np.float32), np.random.default_rng(0), illumination=0.2)
    assert 0.01 < np.ptp(stack[0]) < 0.6
    assert np.abs(stack[0] - stack[2]).max() > 0.005
    assert stack.mean() == pytest.approx(1, abs=0.1)


# The training mix


@pytest.mark.parametrize("kind", sorted(mix.MIXES["v2"]))
def test_every_kind_of_the_new_mix_renders(kind, monkeypatch):
    monkeypatch.setitem(mix.MIXES, "one", {kind: mix.MIXES["v2"][kind]})
    for seed, rgb in ((0, False), (1, True)):
        r = render.random_stack(np.random.default_rng(seed), (48, 40), 4, rgb=rgb, mix="one")
        assert r.stack.shape == (4, 48, 40, 3)[: 4 if rgb else 3]
        assert r.stack.dtype in (np.uint8, np.uint16) and r.stack.max() > 0
        assert np.isfinite(r.truth).all() and r.truth.shape == r.stack.shape[1:]


def test_the_mix_draws_every_kind_by_its_share():
    kinds = mix.MIXES["v2"]
    rng = np.random.default_rng(0)
    names = {id(v): k for k, v in kinds.items()}
    drawn = [names[id(mix.kind_of(rng, "v2"))] for _ in range(2000)]
    total = sum(v["share"] for v in kinds.values())
    for name, kind in kinds.items():
        assert drawn.count(name) / 2000 == pytest.approx(kind["share"] / total, abs=0.04)
