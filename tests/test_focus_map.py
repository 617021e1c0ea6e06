"""The focus map is read around the best slice: the vertex of the logits there, or the mean
slice position over the run of slices around it where that run is broad."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from napari_pdmfuse.model.focus_map import BROAD, DEAD_ZONE, RUN_FLOOR, FocusRun, run_focus
from napari_pdmfuse.model.pdmnet import upsample


def run_focus_reference(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Focus and confidence from full-resolution logits (N, H, W), pixel by pixel: the run
    counts each slice with the gates of the slices from the best one out to it multiplied; the
    vertex of the parabola through the best slice's logit and its neighbours' (at the ends, the
    gated mean of the end slice and its neighbour) reads where the run is narrow, the run's
    mean where it is broad."""
    n = logits.shape[0]
    focus = np.empty(logits.shape[1:], np.float32)
    confidence = np.empty_like(focus)
    z = np.arange(n)
    for y, x in np.ndindex(focus.shape):
        logit = logits[:, y, x].astype(np.float64)
        w = np.exp(logit - logit.max())
        gate = np.clip(w / RUN_FLOOR - 1, 0, 1)
        best = int(np.argmax(w))
        counted = np.zeros(n)
        for side in (range(best, n), range(best, -1, -1)):
            through = 1.0
            for k in side:
                through *= gate[k]
                counted[k] = w[k] * through
        mean = (counted * z).sum() / counted.sum()
        if n == 1:
            vertex = 0.0
        elif best in (0, n - 1):
            inwards = 1 if best == 0 else -1
            g = w[best + inwards] * gate[best + inwards]
            vertex = best + inwards * g / (1 + g)
        else:
            down, up = logit[best] - logit[best - 1], logit[best] - logit[best + 1]
            offset = (down - up) / (2 * (down + up)) if down + up else 0.0
            size = min(max(2 * (abs(offset) - DEAD_ZONE), 0), abs(offset))
            vertex = best + np.copysign(size, offset)
        broad = np.clip((counted.sum() - BROAD[0]) / (BROAD[1] - BROAD[0]), 0, 1)
        focus[y, x] = vertex + broad * (mean - vertex)
        w /= w.sum()
        spread = np.sqrt(max((w * z * z).sum() - (w * z).sum() ** 2, 0))
        confidence[y, x] = np.clip(1 - spread / np.sqrt((n * n - 1) / 12), 0, 1)
    return focus, confidence


def focus_of(weights: list[float], chunk: int = 4) -> tuple[float, float]:
    """Focus and confidence of one pixel's slice weights, given as a flat 4 × 4 logit field."""
    half = torch.log(torch.tensor(weights, dtype=torch.float32))[:, None, None].expand(-1, 2, 2)
    focusing = FocusRun(len(weights))
    for start in range(0, len(weights), chunk):
        focusing.add(half[start : start + chunk].contiguous())
    focus, confidence = focusing.result(4, 4)
    for field in (focus, confidence):  # a flat field upsamples flat, up to float rounding
        torch.testing.assert_close(field, field[:1, :1].expand(4, 4), atol=1e-6, rtol=0)
    return focus[0, 0].item(), confidence[0, 0].item()


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_a_second_mode_does_not_pull_the_focus_between_two_surfaces(chunk):
    # beside a depth step: most weight on slice 2, a defocused rival around slice 7
    weights = [0.02, 0.2, 0.45, 0.2, 0.01, 0.02, 0.05, 0.04, 0.01]
    focus, confidence = focus_of(weights, chunk)
    assert focus == pytest.approx(2.0, abs=1e-5)  # the mean over all slices would be 2.9
    z = np.arange(len(weights))
    w = np.array(weights) / sum(weights)
    spread = math.sqrt((w * z * z).sum() - (w * z).sum() ** 2)
    # the rival still lowers the confidence: it is computed from all the weights
    assert confidence == pytest.approx(1 - spread / math.sqrt((81 - 1) / 12), abs=1e-5)


def test_a_plane_at_the_end_of_the_stack_is_not_pulled_inwards():
    assert focus_of([0.95, 0.05 * RUN_FLOOR, 0.0001, 0.0001])[0] == pytest.approx(0, abs=1e-6)


def test_a_single_broad_mode_keeps_the_sub_slice_mean():
    weights = [0.1, 0.3, 0.4, 0.2]  # every slice above the floor: the plain mean, 1.7
    assert focus_of(weights)[0] == pytest.approx(1.7, abs=1e-5)


def test_equal_weights_give_the_middle_of_the_stack_and_no_confidence():
    focus, confidence = focus_of([0.2] * 5)
    assert focus == pytest.approx(2.0, abs=1e-5)
    assert confidence == pytest.approx(0, abs=1e-6)


def test_the_focus_map_has_no_step_where_a_slice_crosses_the_floor():
    # a neighbour's weight swept through the run's end: the focus moves, but never jumps
    focus = [
        focus_of([1.0, ratio, 0.001, 0.001])[0] for ratio in np.linspace(0.5, 3, 251) * RUN_FLOOR
    ]
    assert focus[-1] - focus[0] > 0.1  # the neighbour went from not counting to counting
    assert np.abs(np.diff(focus)).max() < 0.005


@pytest.mark.parametrize("chunk", [1, 4])
def test_streamed_focus_map_equals_the_per_pixel_definition(chunk):
    rng = np.random.default_rng(7)
    n = 11  # smooth in z, two modes of random heights and widths, and noise
    z = np.arange(n)[:, None, None]
    centres = rng.uniform(0, n - 1, (2, 1, 6, 8))
    widths = rng.uniform(0.5, 3, (2, 1, 6, 8))
    heights = rng.uniform(-4, 0, (2, 1, 6, 8))
    modes = heights - 0.5 * ((z - centres) / widths) ** 2
    half = torch.from_numpy(np.logaddexp(*modes) + rng.normal(0, 0.3, (n, 6, 8))).float()
    focusing = FocusRun(n)
    for start in range(0, n, chunk):
        focusing.add(half[start : start + chunk])
    focus, confidence = focusing.result(11, 15)  # cropped, as a tile padded to the stride
    # Read at the logits' resolution, then upsampled like them.
    expected = torch.from_numpy(np.stack(run_focus_reference(half.numpy()))).float()
    expected = upsample(expected[:, None])[:, 0, :11, :15]
    np.testing.assert_allclose(focus.numpy(), expected[0].numpy(), atol=2e-5)
    np.testing.assert_allclose(confidence.numpy(), expected[1].numpy(), atol=2e-5)


def test_training_scores_the_focus_map_inference_reads_and_can_learn_from_it():
    rng = np.random.default_rng(8)
    logits = torch.from_numpy(rng.normal(0, 2, (2, 9, 5, 6))).float().requires_grad_(True)
    focus = run_focus(torch.softmax(logits, 1))
    for b in range(2):
        expected, _ = run_focus_reference(logits[b].detach().numpy())
        np.testing.assert_allclose(focus[b].detach().numpy(), expected, atol=2e-5)
    focus.sum().backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
