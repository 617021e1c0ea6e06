"""What every fusion method provides, and the focus estimate the classical ones share."""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np
from scipy import ndimage

#: Address space a classical method's run takes besides its tiles (the reader thread's stack and
#: malloc arena, the writers' buffers): measured 145 MB, a tenth of it resident.
CLASSICAL_RESERVE = 160 * 2**20


class TileResult(NamedTuple):
    fused: np.ndarray  # (y, x, C) float32, in data units
    focus: np.ndarray  # (y, x) float32, slice index, fractional
    confidence: np.ndarray  # (y, x) float32 in [0, 1]
    # (y, x) the slice each fused pixel was copied from, where a method picks rather than mixes:
    # the tiling loop then copies the pixel from the data as read (its own dtype, no brightness
    # gains), since the float32 working copy cannot hold every value of float64 or 32-bit data.
    choice: np.ndarray | None = None


class FusionMethod(Protocol):
    """A fusion method works on one tile; the tiling loop owns reading, stitching and writing."""

    name: str
    halo: int  # px of context each side that the core of a tile depends on
    align: int  # tile origins must be multiples of this (the method's downsampling factor)
    bytes_per_voxel: int  # working memory per input voxel besides the float32 block, to size tiles
    reserve_bytes: int  # what a run takes besides its tiles, kept free under a memory limit

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray) -> TileResult:
        """Fuse a (Z, y, x, C) float32 block whose normalised luminance is ``lum`` (Z, y, x)."""
        ...


def focus_from_sharpness(sharpness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Focus index and confidence from a (Z, y, x) local sharpness volume.

    The index is the argmax plane refined to sub-slice precision by a parabola through it and its
    neighbours; the confidence is how much the peak stands out from the stack's mean sharpness,
    so textureless or constant regions (no peak) get zero.
    """
    n = sharpness.shape[0]
    best = np.argmax(sharpness, axis=0)
    peak = np.take_along_axis(sharpness, best[None], 0)[0]
    below = np.take_along_axis(sharpness, np.maximum(best - 1, 0)[None], 0)[0]
    above = np.take_along_axis(sharpness, np.minimum(best + 1, n - 1)[None], 0)[0]
    curvature = below - 2 * peak + above
    inner = (best > 0) & (best < n - 1) & (curvature < 0)
    offset = np.where(inner, 0.5 * (below - above) / np.where(inner, curvature, -1), 0.0)
    focus = (best + np.clip(offset, -0.5, 0.5)).astype(np.float32)
    mean = sharpness.mean(axis=0)
    confidence = np.where(peak > 0, (peak - mean) / np.maximum(peak, 1e-12), 0.0)
    return focus, np.clip(confidence, 0, 1).astype(np.float32)


def local_energy(planes: np.ndarray, size: float) -> np.ndarray:
    """Gaussian-weighted local mean of squared values, per plane of a (Z, y, x) array."""
    return ndimage.gaussian_filter(planes * planes, sigma=(0, size, size), mode="reflect")


def laplacian_energy(lum: np.ndarray, size: float = 2.0) -> np.ndarray:
    """Local energy of the Laplacian of each plane: the classic sharpness measure."""
    lap = np.stack([ndimage.laplace(p, mode="reflect") for p in lum])
    return local_energy(lap, size)


def select_planes(block: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Take, per pixel, the value of plane ``index`` from a (Z, y, x, C) block."""
    return np.take_along_axis(block, index[None, ..., None], 0)[0]
