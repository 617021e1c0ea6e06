"""Laplacian-pyramid fusion (Burt & Adelson) with maximum local energy selection.

Each pyramid level keeps, per position, the coefficient of the plane with the most local energy
in the luminance's level; the low-pass top is averaged over planes, which keeps the overall
brightness of the stack. Every channel follows the luminance's choice.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .base import CLASSICAL_RESERVE, TileResult, focus_from_sharpness, local_energy

KERNEL = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16


def blur(img: np.ndarray) -> np.ndarray:
    # "mirror" (whole-sample symmetry) keeps the zeros that expand() interleaves alternating
    # across the border; "reflect" would put two samples side by side there and skew the edge.
    for axis in (-2, -1):
        img = ndimage.convolve1d(img, KERNEL, axis=axis, mode="mirror")
    return img


def reduce(img: np.ndarray) -> np.ndarray:
    return blur(img)[..., ::2, ::2]


def expand(img: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    up = np.zeros((*img.shape[:-2], *shape), dtype=img.dtype)
    up[..., ::2, ::2] = img
    return 4 * blur(up)


def laplacian_pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    pyramid = []
    for _ in range(levels):
        low = reduce(img)
        pyramid.append(img - expand(low, img.shape[-2:]))
        img = low
    return [*pyramid, img]


class PyramidMethod:
    name = "pyramid"
    levels = 4
    align = 2**levels
    halo = 160
    bytes_per_voxel = 28  # measured: 20 B of its own, plus the luminance and the read
    reserve_bytes = CLASSICAL_RESERVE

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray) -> TileResult:
        data = np.moveaxis(block, -1, 1)  # (Z, C, y, x)
        lum_pyr = laplacian_pyramid(lum, self.levels)
        pyr = laplacian_pyramid(data, self.levels)
        fused = []
        for lum_level, level in zip(lum_pyr[:-1], pyr[:-1], strict=True):
            index = np.argmax(local_energy(lum_level, 1.0), axis=0)
            fused.append(np.take_along_axis(level, index[None, None], 0)[0])
        plane = pyr[-1].mean(axis=0)
        for level in reversed(fused):
            plane = expand(plane, level.shape[-2:]) + level
        focus, confidence = focus_from_sharpness(local_energy(lum_pyr[0], 3.0))
        return TileResult(np.moveaxis(plane, 0, -1).astype(np.float32), focus, confidence)
