"""The focus map between slices: the vertex of the logits where neighbouring planes are much
blurrier than the best one, whole slices on a plane, and no jumps in between."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_pdmfuse.model.focus_map import DEAD_ZONE, FocusRun, run_focus
from napari_pdmfuse.model.pdmnet import upsample


def streamed(logits: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """FocusRun's focus index of half-resolution logits (N, h, w), fed ``chunk`` at a time."""
    focusing = FocusRun(len(logits))
    for start in range(0, len(logits), chunk):
        focusing.add(logits[start : start + chunk].contiguous())
    return focusing.result(2 * logits.shape[1], 2 * logits.shape[2])[0]


def focus_of(logits: np.ndarray) -> float:
    """The focus index of one pixel's logits, as inference streams it and as training scores
    it (the two must agree)."""
    half = torch.tensor(logits, dtype=torch.float32)[:, None, None].expand(-1, 2, 2)
    focus = streamed(half)[0, 0].item()
    trained = run_focus(torch.softmax(half[None, :, :1, :1], 1))[0, 0, 0].item()
    assert trained == pytest.approx(focus, abs=1e-5)
    return focus


def gaussian(centre: float | np.ndarray, sharpness: float, n: int = 10) -> np.ndarray:
    """Logits (n, …) of Gaussian focus profiles over z centred at ``centre``: quadratic."""
    return -sharpness * (np.arange(n).reshape(-1, *np.shape(centre)[:1]) - centre) ** 2


def test_the_centre_between_two_slices_is_found_when_the_neighbours_are_far_below():
    logits = gaussian(3.3, 12)
    w = np.exp(logits - logits.max())
    assert np.sort(w)[-2] < 0.01  # every other slice below 1 % of the best: the run is slice 3
    assert focus_of(logits) == pytest.approx(3.3, abs=0.02)


@pytest.mark.parametrize("sharpness", [1, 12])
def test_a_profile_on_a_plane_reads_that_plane(sharpness):
    assert focus_of(gaussian(4, sharpness)) == pytest.approx(4, abs=1e-5)
    # neighbours not quite symmetric, as a network's are on a flat terrace: still the plane
    lopsided = gaussian(4, sharpness)
    lopsided[5] *= 1.2
    assert focus_of(lopsided) == pytest.approx(4, abs=1e-5)


@pytest.mark.parametrize("sharpness", [0.3, 1, 4, 12])
def test_a_surface_swept_through_the_stack_moves_the_focus_without_jumps(sharpness):
    centres = np.linspace(0, 9, 901)  # from the first slice to the last, both ends included
    logits = torch.from_numpy(gaussian(centres[None], sharpness)).float()  # (n, 901)
    focus = run_focus(torch.softmax(logits, 0)[None, :, None])[0, 0].numpy()
    step = np.abs(np.diff(focus))
    # rising, but for dips of up to 0.003 slices where the run's mean starts to take over
    # near a tie (the mean of two slices rises as a sigmoid, the vertex linearly)
    assert (np.maximum.accumulate(focus) - focus).max() < 0.005
    # Between the end slices and their neighbours the two-slice mean rises steeply where the
    # profile is sharp, but without a step; elsewhere at most the dead zone's slope of 2.
    assert step.max() < 0.1
    assert step[(centres[1:] > 0.5) & (centres[:-1] < 8.5)].max() < 2.5 * (centres[1] - centres[0])
    inside = (centres >= 1) & (centres <= 8)  # broad runs reach the ends from further in
    if sharpness >= 4:  # sharp profiles: the vertex, exact up to its dead zone
        assert np.abs(focus - centres)[inside].max() <= DEAD_ZONE + 1e-4


def test_streamed_focus_map_equals_the_whole_stack_read_out():
    rng = np.random.default_rng(3)
    n = 9  # sharp and broad profiles, ties, and noise
    z = np.arange(n)[:, None, None]
    centre = rng.uniform(-1, n, (1, 6, 8))
    sharpness = 10 ** rng.uniform(-1, 1.5, (1, 6, 8))
    logits = -sharpness * (z - centre) ** 2 + rng.normal(0, 0.3, (n, 6, 8))
    logits[:, 0, 0] = 0  # every slice tied
    logits[:, 0, 1] = np.repeat([0, 0, -1], 3)  # a flat top over the first six slices
    half = torch.from_numpy(logits).float()
    # Read at the logits' resolution, then upsampled like them.
    expected = upsample(run_focus(torch.softmax(half[None], 1))[:, None])[0, 0]
    for chunk in (1, 4):
        torch.testing.assert_close(streamed(half, chunk), expected, atol=2e-5, rtol=0)


def test_training_gets_finite_gradients_at_ties_and_on_flat_tops():
    logits = torch.zeros(1, 5, 2, 2)
    logits[0, :, 1, 1] = torch.tensor([0.0, 0.0, 0.0, -3.0, -3.0])
    logits[0, :, 0, 1] = torch.tensor([-9.0, 0.0, 0.0, -9.0, -9.0])
    logits.requires_grad_(True)
    run_focus(torch.softmax(logits, 1)).sum().backward()
    assert torch.isfinite(logits.grad).all()
