"""Quality of fused images: against ground truth (PSNR, SSIM, focus MAE) and without it (Q^AB/F).

Q^AB/F is the edge-preservation measure of Xydeas & Petrovic (Electronics Letters 36(4), 2000),
with Sobel gradients and the usual constants. For a stack of N sources it is generalised as the
gradient-weighted sum over all sources,

    Q = Σ_n Σ_px Q^{nF} w^n / Σ_n Σ_px w^n,   w^n = g_n^L,

which for N = 2 is exactly the standard two-source Q^AB/F (not the average over pairs of sources,
which would cost N(N-1)/2 evaluations on 30-plane stacks). With these constants a perfect match
scores Q_MAX ≈ 0.975, not 1: the sigmoids never reach their Γ. Colour images are judged on their
Rec. 709 luminance.

Run ``python benchmarks/metrics.py`` for a self-check.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

GAMMA_G, KAPPA_G, SIGMA_G = 0.9994, -15.0, 0.5
GAMMA_A, KAPPA_A, SIGMA_A = 0.9879, -22.0, 0.8
L = 1.0
LUMA = np.array([0.2126, 0.7152, 0.0722])


def luminance(image: np.ndarray, rgb: bool) -> np.ndarray:
    """(…, Y, X[, 3]) → (…, Y, X) float64; grey images pass through."""
    image = np.asarray(image, dtype=np.float64)
    return image[..., :3] @ LUMA if rgb else image


def _gradient(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    gx = ndimage.sobel(plane, axis=1, mode="nearest")
    gy = ndimage.sobel(plane, axis=0, mode="nearest")
    return np.hypot(gx, gy), np.arctan2(gy, gx)


def edge_preservation(source: tuple, fused: tuple) -> np.ndarray:
    """Per-pixel Q^{AF} from the (strength, angle) gradients of a source A and the fusion F."""
    (g_a, a_a), (g_f, a_f) = source, fused
    strength = np.ones_like(g_a)  # equal strengths (including both zero) are preserved
    np.divide(g_f, g_a, out=strength, where=g_a > g_f)
    np.divide(g_a, g_f, out=strength, where=g_a < g_f)
    turn = np.abs(a_a - a_f) % np.pi  # orientation change, sign of the edge ignored
    orientation = np.abs(turn - np.pi / 2) / (np.pi / 2)
    return preservation(strength, orientation)


def preservation(strength: np.ndarray, orientation: np.ndarray) -> np.ndarray:
    """The sigmoids mapping relative strength and orientation (1 = kept) to Q in [0, Q_MAX]."""
    q_g = GAMMA_G / (1 + np.exp(KAPPA_G * (strength - SIGMA_G)))
    q_a = GAMMA_A / (1 + np.exp(KAPPA_A * (orientation - SIGMA_A)))
    return q_g * q_a


Q_MAX = float(preservation(np.float64(1), np.float64(1)))


def qabf(sources: np.ndarray, fused: np.ndarray) -> float:
    """N-source Q^AB/F of ``fused`` (Y, X) against ``sources`` (N, Y, X), both grey."""
    grad_f = _gradient(np.asarray(fused, dtype=np.float64))
    num = den = 0.0
    for source in sources:
        grad_a = _gradient(np.asarray(source, dtype=np.float64))
        weight = grad_a[0] ** L
        num += float((edge_preservation(grad_a, grad_f) * weight).sum())
        den += float(weight.sum())
    return num / den if den > 0 else float("nan")


def psnr(truth: np.ndarray, fused: np.ndarray) -> float:
    return float(
        peak_signal_noise_ratio(truth, fused.astype(np.float64), data_range=float(np.ptp(truth)))
    )


def ssim(truth: np.ndarray, fused: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (over the colour channels for RGB); with ``mask`` (Y, X), the mean of the SSIM
    map over the masked pixels, the border that the mean SSIM leaves out excluded too."""
    channel_axis = -1 if truth.ndim == 3 else None
    args = (truth.astype(np.float64), fused.astype(np.float64))
    kwargs = {"data_range": float(np.ptp(truth)), "channel_axis": channel_axis}
    if mask is None:
        return float(structural_similarity(*args, **kwargs))
    _, full = structural_similarity(*args, **kwargs, full=True)
    local = full.mean(-1) if truth.ndim == 3 else full
    inside = np.zeros_like(mask, dtype=bool)
    pad = (7 - 1) // 2  # skimage's default window, whose half it crops from the mean
    inside[pad:-pad, pad:-pad] = mask[pad:-pad, pad:-pad]
    return float(local[inside].mean()) if inside.any() else float("nan")


def focus_mae(focus: np.ndarray, depth: np.ndarray, textured: np.ndarray) -> float:
    """Mean absolute focus error in slices, over the pixels with texture to judge focus by."""
    if not textured.any():
        return float("nan")
    return float(np.abs(focus - depth)[textured].mean())


def self_check() -> None:
    rng = np.random.default_rng(0)
    a = ndimage.gaussian_filter(rng.random((64, 64)), 1.0)
    b = ndimage.gaussian_filter(a, 3.0)
    assert abs(qabf(a[None], a) - Q_MAX) < 1e-9, "a source fused into itself must score Q_MAX"
    assert abs(qabf(np.stack([a, a]), a) - Q_MAX) < 1e-9
    assert qabf(np.stack([a, b]), np.full_like(a, 0.5)) < 1e-3, "a constant image must score ~0"
    assert qabf(np.stack([a, b]), a) > qabf(np.stack([a, b]), b), "sharp must beat blurred"
    truth = rng.random((32, 32)) * 1000
    with np.errstate(divide="ignore"):
        assert psnr(truth, truth) == float("inf") and ssim(truth, truth) > 0.999
    assert ssim(truth, truth, truth > 500) > 0.999 and np.isnan(ssim(truth, truth, truth < 0))
    partial = truth.copy()
    partial[:, :16] = 0
    masks = np.zeros(truth.shape, bool), np.zeros(truth.shape, bool)
    masks[0][:, 24:], masks[1][:, :8] = True, True
    assert ssim(truth, partial, masks[0]) > 0.999 > 0.1 > ssim(truth, partial, masks[1])
    print(f"metrics self-check passed (Q^AB/F of a perfect fusion = Q_MAX = {Q_MAX:.4f})")


if __name__ == "__main__":
    self_check()
