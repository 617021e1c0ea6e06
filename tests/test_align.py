"""Slice alignment against rendered stacks moved by known shifts and focus breathing."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from napari_pdmfuse import InputError, fuse
from napari_pdmfuse.align import (
    Transform,
    apply_transforms,
    coverage,
    estimate_transforms,
    register_pair,
    report,
)
from napari_pdmfuse.render import RenderedStack, demo_stack
from napari_pdmfuse.stack import as_stack, normalisation

N_SLICES, SIZE, MARGIN = 8, 256, 40


def move(plane: np.ndarray, t: Transform) -> np.ndarray:
    """What the microscope records: ``plane`` shifted and magnified by ``t`` about its centre."""
    centre = (np.array(plane.shape) - 1) / 2
    inv = t.inverse()
    offset = centre - inv.scale * centre + np.array([inv.dy, inv.dx])
    return ndimage.affine_transform(
        plane.astype(np.float32), np.full(2, inv.scale), offset=offset, order=3, mode="nearest"
    )


def true_transforms(seed: int, breathing: float) -> list[Transform]:
    """Shifts up to 15 px and a magnification drifting with focus, identity at the middle."""
    rng = np.random.default_rng(seed)
    ref = N_SLICES // 2
    out = []
    for k in range(N_SLICES):
        if k == ref:
            out.append(Transform())
            continue
        dy, dx = rng.uniform(-15, 15, 2)
        scale = 1 + breathing * (k - ref) / ref + breathing * rng.uniform(-0.15, 0.15)
        out.append(Transform(dy=float(dy), dx=float(dx), scale=float(scale)))
    return out


@dataclass
class Moved:
    rendered: RenderedStack  # cropped to SIZE: the stack as it should have been recorded
    stack: np.ndarray  # the same planes, recorded through ``truth``
    truth: list[Transform]


def moved_stack(breathing: float) -> Moved:
    """Render a larger field, move each plane, crop: no plane has any padding."""
    r = demo_stack(N_SLICES, SIZE + 2 * MARGIN, seed=0)
    truth = true_transforms(seed=1, breathing=breathing)
    crop = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    planes = [np.clip(np.rint(move(p, t)), 0, 65535) for p, t in zip(r.stack, truth, strict=True)]
    stack = np.stack(planes).astype(np.uint16)[(slice(None), *crop)]
    cropped = RenderedStack(
        stack=r.stack[(slice(None), *crop)],
        truth=r.truth[crop],
        depth=r.depth[crop],
        textured=r.textured[crop],
    )
    return Moved(cropped, stack, truth)


def luminance(stack: np.ndarray) -> np.ndarray:
    s = as_stack(stack)
    return normalisation(s).luminance(np.asarray(s.data, dtype=np.float32))


def errors(truth: list[Transform], estimate: list[Transform]) -> np.ndarray:
    """(Z, 3): |dy| and |dx| errors in px, |scale| error in per cent."""
    return np.array(
        [
            [abs(a.dy - b.dy), abs(a.dx - b.dx), 100 * abs(a.scale - b.scale)]
            for a, b in zip(truth, estimate, strict=True)
        ]
    )


@pytest.fixture(scope="module")
def breathing() -> tuple[Moved, list[Transform]]:
    moved = moved_stack(breathing=0.02)
    return moved, estimate_transforms(luminance(moved.stack), "similarity")


def test_similarity_recovers_shifts_and_breathing(breathing):
    moved, estimate = breathing
    assert max(abs(t.scale - 1) for t in moved.truth) > 0.015
    assert max(max(abs(t.dy), abs(t.dx)) for t in moved.truth) > 12
    err = errors(moved.truth, estimate)
    assert err[:, :2].max() < 0.5, report(estimate)
    assert err[:, 2].max() < 0.2, report(estimate)
    assert estimate[N_SLICES // 2] == Transform()


def test_translation_recovers_pure_shifts():
    moved = moved_stack(breathing=0.0)
    estimate = estimate_transforms(luminance(moved.stack), "translation")
    assert all(t.scale == 1 for t in estimate)
    assert errors(moved.truth, estimate)[:, :2].max() < 0.5, report(estimate)


def ssim_map(image: np.ndarray, truth: np.ndarray) -> np.ndarray:
    span = float(truth.max() - truth.min())
    _, full = structural_similarity(
        truth.astype(np.float64), image.astype(np.float64), data_range=span, full=True
    )
    return full


@pytest.mark.parametrize("method", ["wavelet", pytest.param("pdmnet", marks=pytest.mark.slow)])
def test_aligned_stack_fuses_as_well_as_an_unmoved_one(breathing, method):
    moved, estimate = breathing
    aligned, covered = apply_transforms(moved.stack, estimate)
    assert aligned.dtype == moved.stack.dtype and aligned.shape == moved.stack.shape
    assert 0.7 < covered.mean() < 1
    truth = moved.rendered.truth
    unmoved = ssim_map(fuse(moved.rendered.stack, method=method).fused, truth)[covered].mean()
    after = ssim_map(fuse(aligned, method=method).fused, truth)[covered].mean()
    # Resampling smooths a little noise, so the aligned stack may score slightly higher.
    assert after > unmoved - 0.01, (after, unmoved)
    if method == "wavelet":
        before = ssim_map(fuse(moved.stack, method=method).fused, truth)[covered].mean()
        assert before < unmoved - 0.2  # the test would see a misalignment


def test_identity_changes_nothing():
    stack = demo_stack(3, 64, rgb=True, bits=8, seed=4).stack
    aligned, covered = apply_transforms(stack, [Transform()] * 3)
    np.testing.assert_array_equal(aligned, stack)
    assert covered.all()


def test_every_channel_moves_with_its_plane():
    grey = demo_stack(3, 64, seed=4).stack
    two = np.stack([grey, grey // 2], axis=-1)
    transforms = [Transform(dy=3.3, dx=-1.2, scale=1.01), Transform(), Transform(dx=2.5)]
    aligned, _ = apply_transforms(two, transforms)
    alone, _ = apply_transforms(grey // 2, transforms)
    np.testing.assert_array_equal(aligned[..., 1], alone)
    assert np.abs(aligned[..., 0].astype(int) - 2 * aligned[..., 1]).max() <= 2


def test_coverage_leaves_out_what_a_plane_did_not_see():
    covered = coverage((50, 40), [Transform(), Transform(dy=10.0, dx=-5.0)])
    assert covered[:40, 5:].all()
    assert not covered[40:].any() and not covered[:, :5].any()
    grown = coverage((101, 101), [Transform(scale=2.0)])  # the plane saw half the field
    assert grown[25:76, 25:76].all() and not grown[:25].any() and not grown[76:].any()


def test_transforms_compose_and_invert():
    t = Transform(dy=1.5, dx=-2.0, scale=1.02)
    back = t.then(t.inverse())
    assert back.dy == pytest.approx(0, abs=1e-12) and back.scale == pytest.approx(1)
    centre = np.array([10.0, 20.0])
    p = np.array([3.0, 4.0])
    u = Transform(dx=5.0, scale=0.98)
    np.testing.assert_allclose(t.then(u).map(p, centre), u.map(t.map(p, centre), centre))


def test_pair_registration_sign_convention():
    plane = demo_stack(2, 128, seed=2).stack[1].astype(np.float32)
    t = Transform(dy=4.25, dx=-7.5)
    estimate = register_pair(plane, move(plane, t), "translation")
    assert estimate.dy == pytest.approx(4.25, abs=0.1) and estimate.dx == pytest.approx(
        -7.5, abs=0.1
    )


def test_textureless_planes_stay_in_place():
    flat = np.full((3, 64, 64), 7.0)
    assert estimate_transforms(flat, "similarity") == [Transform()] * 3


def test_report_lists_every_plane():
    table = report([Transform(), Transform(dy=1.25, dx=-2.5, scale=1.015)])
    lines = table.splitlines()
    assert len(lines) == 3 and "dy" in lines[0] and "scale" in lines[0]
    assert "+1.25" in lines[2] and "-2.50" in lines[2] and "1.01500" in lines[2]


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: estimate_transforms(np.zeros((3, 64, 64)), "affine"), "Unknown alignment model"),
        (lambda: estimate_transforms(np.zeros((64, 64)), "translation"), "(Z, Y, X)"),
        (lambda: estimate_transforms(np.zeros((3, 20, 64)), "translation"), "too small"),
        (lambda: estimate_transforms(np.zeros((3, 64, 64)), reference=5), "Reference plane"),
        (lambda: apply_transforms(np.zeros((3, 8, 8)), [Transform()]), "one per plane"),
    ],
)
def test_bad_calls_say_what_to_do(call, match):
    with pytest.raises(InputError, match=match.replace("(", r"\(").replace(")", r"\)")):
        call()
