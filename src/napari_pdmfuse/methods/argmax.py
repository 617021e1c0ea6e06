"""The naive reference: per pixel, the plane with the most Laplacian energy, no regularisation."""

from __future__ import annotations

import numpy as np

from .base import (
    CLASSICAL_RESERVE,
    TileResult,
    focus_from_sharpness,
    laplacian_energy,
    select_planes,
)


class ArgmaxMethod:
    name = "argmax"
    halo = 16
    align = 1
    bytes_per_voxel = 20  # measured: 11 B of its own, plus the luminance and the read
    reserve_bytes = CLASSICAL_RESERVE

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray) -> TileResult:
        sharpness = laplacian_energy(lum, size=1.0)
        focus, confidence = focus_from_sharpness(sharpness)
        best = np.argmax(sharpness, axis=0)
        return TileResult(select_planes(block, best).astype(np.float32), focus, confidence, best)
