"""Guided review: doubtful regions found where they are, ranked, and stepped through in a
viewer with the camera on each."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_pdmfuse.review import (
    DISAGREEMENT,
    LOW_CONFIDENCE,
    doubtful_regions,
    reduced,
    reduction,
)
from napari_pdmfuse.writing.omezarr import halve


def textured(shape=(300, 400)) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(0).uniform(0, 1000, shape), 1.5)


def inside(region, y, x) -> bool:
    return region.rows.start <= y < region.rows.stop and region.cols.start <= x < region.cols.stop


def test_low_confidence_and_disagreement_are_found_and_ranked():
    image = textured()
    image[:, 330:] = 500.0  # blank background: no confidence, nothing to doubt
    confidence = np.full(image.shape, 0.9, np.float32)
    confidence[:, 330:] = 0.0
    confidence[50:90, 60:120] = 0.05  # detail the stack could not place
    other = image.copy()
    other[200:240, 250:300] += 300  # where a second method saw something else

    regions = doubtful_regions(image, confidence, other)

    assert [r.reason for r in regions[:2]] == [DISAGREEMENT, LOW_CONFIDENCE]
    assert inside(regions[0], 220, 275) and inside(regions[1], 70, 90)
    assert regions[0].score > regions[1].score
    assert all(r.cols.start < 330 - 10 for r in regions)  # the blank background is not doubtful
    assert doubtful_regions(image, np.full(image.shape, 0.9, np.float32)) == []


def test_reduced_maps_and_coordinates_of_the_full_result():
    image = textured((2100, 1300))
    assert reduction(image.shape) == 4
    small = reduced(image, 4)
    twice = halve(halve(image.astype(np.float32), np.dtype(np.float32)), np.dtype(np.float32))
    np.testing.assert_allclose(small, twice, rtol=1e-5)  # as the stores' pyramid levels
    confidence = np.full(small.shape, 0.9, np.float32)
    confidence[100:130, 200:240] = 0.05
    (region,) = doubtful_regions(small, confidence, factor=4)
    assert inside(region, 460, 880) and region.rows.stop <= 2100
    assert region.centre == pytest.approx((460, 880), abs=20)
