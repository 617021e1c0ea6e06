"""Slice alignment against rendered stacks moved by known shifts and focus breathing."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import structural_similarity

from napari_pdmfuse import InputError, fuse
from napari_pdmfuse.align import (
    Transform,
    apply_transforms,
    central_view,
    coverage,
    estimate_from_centre,
    estimate_transforms,
    image_centre,
    register_pair,
    report,
)
from napari_pdmfuse.aligned_reading import AlignedReader
from napari_pdmfuse.stack import as_stack, normalisation
from napari_pdmfuse.training.rendering import RenderedStack, demo_stack

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
        (lambda: AlignedReader(np.zeros((3, 8, 8, 1)), [Transform()]), "one per plane"),
        (lambda: AlignedReader(np.zeros((1, 8, 8, 1)), [Transform()], order=2), "order 2"),
        (
            lambda: estimate_from_centre(np.zeros((3, 64, 64, 1)), lambda b: b[..., 0], "affine"),
            "Unknown alignment model",
        ),
        (
            lambda: estimate_from_centre(np.zeros((3, 64, 64, 1)), lambda b: b[..., 0], max_side=8),
            "too small to align on",
        ),
        (
            lambda: estimate_from_centre(np.zeros((3, 20, 64, 1)), lambda b: b[..., 0]),
            "too small to align;",
        ),
    ],
)
def test_bad_calls_say_what_to_do(call, match):
    with pytest.raises(InputError, match=match.replace("(", r"\(").replace(")", r"\)")):
        call()


def displacement(a: list[Transform], b: list[Transform], shape_yx: tuple[int, int]) -> float:
    """Largest distance (px) between where ``a`` and ``b`` put any pixel of the image."""
    (h, w) = shape_yx
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], dtype=np.float64)
    centre = image_centre(shape_yx)
    return max(
        float(np.abs(s.map(corners, centre) - t.map(corners, centre)).max())
        for s, t in zip(a, b, strict=True)
    )


def test_central_view_estimates_the_whole_frames_transforms(breathing):
    """Transforms found on a view smaller than the planes apply to the whole image."""
    moved, whole = breathing
    stack = as_stack(da.from_array(moved.stack, chunks=(1, 64, 64)))
    view = central_view(stack.shape_yx, 192)
    assert view == (slice(32, 224), slice(32, 224))
    estimate = estimate_from_centre(
        stack.data, normalisation(stack).luminance, "similarity", max_side=192
    )
    assert estimate[N_SLICES // 2] == Transform()
    assert errors(moved.truth, estimate)[:, :2].max() < 0.1, report(estimate)
    assert errors(moved.truth, estimate)[:, 2].max() < 0.15, report(estimate)
    assert displacement(estimate, whole, stack.shape_yx) < 0.25
    assert displacement(estimate, moved.truth, stack.shape_yx) < 0.25


def test_a_view_as_large_as_the_image_is_the_whole_image_estimate(breathing):
    planes = breathing[0].stack[3:6]
    s = as_stack(planes)
    estimate = estimate_from_centre(s.data, normalisation(s).luminance, "translation")
    assert estimate == estimate_transforms(luminance(planes), "translation")
    assert estimate[0] != Transform()


def test_recentring_keeps_the_motion():
    t = Transform(dy=2.5, dx=-1.25, scale=1.04)
    old, new = np.array([40.0, 70.0]), np.array([127.5, 127.5])
    points = np.array([[0.0, 0.0], [255.0, 17.0], [127.5, 127.5]])
    moved = t.recentred(old, new)
    np.testing.assert_allclose(moved.map(points, new), t.map(points, old))
    assert moved.scale == t.scale and moved.dy == pytest.approx(2.5 - 0.04 * (40 - 127.5))


#: Windows of a 150 × 140 image: corners, edges, interior, thin strips and the whole image.
WINDOWS = [
    (slice(0, 40), slice(0, 40)),
    (slice(110, 150), slice(100, 140)),
    (slice(0, 33), slice(97, 140)),
    (slice(120, 150), slice(0, 50)),
    (slice(50, 97), slice(41, 90)),
    (slice(0, 150), slice(135, 140)),
    (slice(149, 150), slice(0, 140)),
    (slice(None), slice(None)),
]

SIMILARITY = [
    Transform(dy=7.3, dx=-12.6, scale=1.03),
    Transform(dy=-2.2, dx=3.1, scale=0.97),
    Transform(),
    Transform(dy=45.5, dx=-60.2, scale=1.01),  # half the field of view moved out of sight
]
TRANSLATION = [Transform(dy=3.4, dx=-5.7), Transform(), Transform(dy=-20.5, dx=60.25)]


def stack_of(kind: str, n: int) -> np.ndarray:
    """(Z, 150, 140, C) stacks of the source dtypes a reader sees."""
    rgb = demo_stack(n, 150, rgb=True, bits=8, seed=5).stack[:, :, :140]
    if kind == "rgb8":
        return rgb
    grey = demo_stack(n, 150, seed=6).stack[:, :, :140, None]
    return grey if kind == "grey16" else grey.astype(np.float32) / 7.0


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize(
    ("kind", "transforms"),
    [("grey16", SIMILARITY), ("rgb8", SIMILARITY), ("float", TRANSLATION), ("rgb8", TRANSLATION)],
)
def test_aligned_windows_equal_the_aligned_stack(kind, transforms, order):
    stack = stack_of(kind, len(transforms))
    whole, covered = apply_transforms(stack, transforms, order=order)
    span = float(stack.max()) - float(stack.min())
    # Cubic splines reach the whole plane, windows read 8 px beyond their samples: tiny
    # differences; linear interpolation is exact (up to rounding).
    tolerance = 1e-3 * span if order == 3 else 1e-5 * span
    lazy = da.from_array(stack, chunks=(2, 64, 64, stack.shape[-1]))
    for source in (stack, lazy):
        reader = AlignedReader(source, transforms, order=order)
        assert reader.shape == stack.shape and reader.dtype == stack.dtype
        for rows, cols in WINDOWS:
            window = reader.window(rows, cols)
            assert window.dtype == stack.dtype
            expected = whole[:, rows, cols]
            assert window.shape == expected.shape
            difference = np.abs(window.astype(np.float64) - expected).max()
            assert difference <= max(tolerance, 1 if stack.dtype.kind == "u" else 0), (rows, cols)
            np.testing.assert_array_equal(reader.coverage(rows, cols), covered[rows, cols])


def test_reference_plane_is_read_unchanged():
    stack = stack_of("float", 3)
    reader = AlignedReader(stack, TRANSLATION)
    np.testing.assert_array_equal(
        reader.window(slice(10, 60), slice(5, 50))[1], stack[1, 10:60, 5:50]
    )


def test_reader_travels_to_another_process():
    """Pickled with its lazy grey source and how to cut it, as dask sends it to workers."""
    grey = stack_of("grey16", len(SIMILARITY))[..., 0]
    stack = as_stack(da.from_array(grey, chunks=(1, 50, 50)))
    reader = AlignedReader(stack.data, SIMILARITY, cut=stack.window)
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.transforms == tuple(SIMILARITY) and copy.shape == (4, 150, 140, 1)
    rows, cols = slice(90, 150), slice(60, 140)
    np.testing.assert_array_equal(copy.window(rows, cols), reader.window(rows, cols))
    whole, _ = apply_transforms(grey, SIMILARITY)
    assert np.abs(copy.window(rows, cols)[..., 0].astype(int) - whole[:, rows, cols]).max() <= 1


def test_window_coverage_is_the_coverage_of_the_window():
    shape = (101, 90)
    transforms = [Transform(dy=10.5, dx=-5.0), Transform(), Transform(scale=1.2, dx=3.0)]
    covered = coverage(shape, transforms)
    assert 0.3 < covered.mean() < 0.9
    for rows, cols in [(slice(0, 30), slice(0, 30)), (slice(40, 101), slice(17, 90))]:
        np.testing.assert_array_equal(coverage(shape, transforms, rows, cols), covered[rows, cols])
