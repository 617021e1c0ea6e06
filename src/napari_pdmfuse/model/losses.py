"""Training losses: fused image against truth (L1 + SSIM) and focus index against depth."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - size // 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Mean structural similarity of (B, H, W) images, Gaussian window as in Wang et al. 2004."""
    g = _gaussian_window().to(a)
    pad = g.numel() // 2

    def blur(t: torch.Tensor) -> torch.Tensor:
        t = F.conv2d(t[:, None], g.view(1, 1, 1, -1), padding=(0, pad))
        return F.conv2d(t, g.view(1, 1, -1, 1), padding=(pad, 0))[:, 0]

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return (num / den)[:, pad:-pad, pad:-pad].mean()


def fusion_loss(
    weights: torch.Tensor,
    slices: torch.Tensor,
    truth: torch.Tensor,
    depth: torch.Tensor,
    textured: torch.Tensor,
    focus_weight: float = 0.05,
) -> tuple[torch.Tensor, dict[str, float]]:
    """weights, slices (B, N, H, W); truth, depth (B, H, W); textured (B, H, W) bool."""
    fused = (weights * slices).sum(1)
    n = slices.shape[1]
    z = torch.arange(n, dtype=weights.dtype, device=weights.device).view(1, n, 1, 1)
    focus = (weights * z).sum(1)
    l1 = (fused - truth).abs().mean()
    structure = 1 - ssim(fused, truth)
    mask = textured.to(weights.dtype)
    focus_err = (
        F.smooth_l1_loss(focus, depth, reduction="none") * mask
    ).sum() / mask.sum().clamp_min(1)
    loss = l1 + 0.5 * structure + focus_weight * focus_err
    return loss, {"l1": l1.item(), "ssim": 1 - structure.item(), "focus": focus_err.item()}


def focus_l1(focus: torch.Tensor, depth: torch.Tensor, textured: torch.Tensor) -> torch.Tensor:
    """Mean absolute focus error on textured pixels (B, H, W): what the benchmarks score."""
    mask = textured.to(focus.dtype)
    return ((focus - depth).abs() * mask).sum() / mask.sum().clamp_min(1)
