"""Where to look first in a fused image: regions of low confidence and regions where two
fusion methods disagree, ranked.

A fused image is wrong where the stack gave the method little to go on (the confidence map is
low although the image shows detail; not blank background, which is flat in every plane,
harmless, and has zero confidence) and where two methods reached different answers (halos,
ghosts, the wrong plane of a thin overhang). :func:`doubtful_regions` scores both per pixel on
a copy of the result at most :data:`REVIEW_SIDE` px a side, groups the high scores into
regions and ranks them by how much doubt they hold, so a large result can be checked region
by region instead of by panning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Longest side (px) the maps are reviewed at; larger results are reduced by 2 × 2 means.
REVIEW_SIDE = 1024

#: Regions are the connected areas scoring above this (0 to 1) and above the 95th percentile
#: of the scores; at most MAX_REGIONS, each at least MIN_PIXELS (at the review's scale).
MIN_SCORE = 0.2
MAX_REGIONS = 20
MIN_PIXELS = 9

#: Gaussian width (px at the review's scale) of the local detail and of the differences.
SIGMA = 2.0

LOW_CONFIDENCE = "low confidence"
DISAGREEMENT = "methods disagree"


@dataclass(frozen=True)
class Region:
    """A doubtful region: its bounding box and centre in pixels of the full result, its area
    (px of the full result), its mean doubt (0 to 1) and why it is doubtful. Regions are ranked
    by :attr:`score`, the doubt they hold."""

    rows: slice
    cols: slice
    centre: tuple[float, float]
    area: int
    doubt: float
    reason: str

    @property
    def score(self) -> float:
        return self.area * self.doubt


def reduction(shape_yx: tuple[int, int], side: int = REVIEW_SIDE) -> int:
    """The power of two a result is reduced by to be reviewed (as its pyramid levels are)."""
    factor = 1
    while max(shape_yx) / factor > side:
        factor *= 2
    return factor


def reduced(values: np.ndarray, factor: int) -> np.ndarray:
    """(Y, X[, C]) values as means of ``factor`` × ``factor`` blocks (edge rows and columns
    that do not fill a block are dropped, as in the stores' pyramids)."""
    values = np.asarray(values, dtype=np.float32)
    if factor == 1:
        return values
    height, width = (n // factor for n in values.shape[:2])
    blocks = values[: height * factor, : width * factor]
    shape = (height, factor, width, factor, *values.shape[2:])
    return blocks.reshape(shape).mean(axis=(1, 3))


def luminance(image: np.ndarray) -> np.ndarray:
    """(Y, X) brightness of a grey (Y, X) or (Y, X, C) image, scaled to its 0.5–99.5 % range."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    low, high = np.percentile(grey, (0.5, 99.5))
    return (grey - low) / (high - low if high > low else 1.0)


def detail(grey: np.ndarray) -> np.ndarray:
    """Local detail in [0, 1]: smoothed gradient magnitude over its 99th percentile."""
    magnitude = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1))
    local = ndimage.gaussian_filter(magnitude, SIGMA)
    top = np.percentile(local, 99)
    return np.clip(local / (top if top > 0 else 1.0), 0, 1)


def scores(
    fused: np.ndarray,
    confidence: np.ndarray,
    other: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-pixel doubt in [0, 1], by reason: low confidence where there is detail, and the
    difference between the two fusions (in units of the image's range)."""
    grey = luminance(fused)
    confidence = np.clip(confidence, 0, 1)
    # Zero confidence marks no texture in any plane (blank background): nothing to get wrong.
    doubt = np.where(confidence > 0, (1 - confidence) * detail(grey), np.float32(0))
    found = {LOW_CONFIDENCE: ndimage.gaussian_filter(doubt, SIGMA)}
    if other is not None:
        low, high = np.percentile(fused.mean(axis=-1) if fused.ndim == 3 else fused, (0.5, 99.5))
        span = high - low if high > low else 1.0
        difference = np.abs(fused - other)
        difference = difference.mean(axis=-1) if difference.ndim == 3 else difference
        found[DISAGREEMENT] = np.clip(ndimage.gaussian_filter(difference / span, SIGMA) * 4, 0, 1)
    return found


def doubtful_regions(
    fused: np.ndarray,
    confidence: np.ndarray,
    other: np.ndarray | None = None,
    *,
    factor: int = 1,
    max_regions: int = MAX_REGIONS,
) -> list[Region]:
    """The doubtful regions of a result, most doubtful first.

    ``fused`` (Y, X[, C]) and ``confidence`` (Y, X) are the result (``other``, the fused image
    of a second method, adds the regions where they differ), already reduced by ``factor``
    (see :func:`reduced`); the regions are given in pixels of the full result.
    """
    fused = np.asarray(fused, dtype=np.float32)
    other = None if other is None else np.asarray(other, dtype=np.float32)
    by_reason = scores(fused, np.asarray(confidence, dtype=np.float32), other)
    stacked = np.stack(list(by_reason.values()))
    combined = stacked.max(axis=0)
    threshold = max(MIN_SCORE, float(np.percentile(combined, 95)))
    labels, count = ndimage.label(combined >= threshold)
    if count == 0:
        return []
    index = np.arange(1, count + 1)
    mass = ndimage.sum_labels(combined, labels, index)
    size = ndimage.sum_labels(np.ones_like(combined), labels, index)
    reasons = list(by_reason)
    per_reason = [ndimage.sum_labels(s, labels, index) for s in stacked]
    boxes = ndimage.find_objects(labels)
    centres = ndimage.center_of_mass(combined, labels, index)
    regions = []
    for i in np.argsort(-mass):
        if size[i] < MIN_PIXELS:
            continue
        rows, cols = boxes[i]
        reason = reasons[int(np.argmax([p[i] for p in per_reason]))]
        regions.append(
            Region(
                rows=slice(rows.start * factor, rows.stop * factor),
                cols=slice(cols.start * factor, cols.stop * factor),
                centre=((centres[i][0] + 0.5) * factor - 0.5, (centres[i][1] + 0.5) * factor - 0.5),
                area=int(size[i]) * factor**2,
                doubt=float(mass[i] / size[i]),
                reason=reason,
            )
        )
        if len(regions) == max_regions:
            break
    return regions
