"""The discrete wavelet transform as fixed strided convolutions, so it runs on the GPU too.

The filter bank comes from PyWavelets; torch only applies it. One level turns each channel into
its four sub-bands (LL, LH, HL, HH) at half resolution, which is also how PDMNet downsamples.
"""

from __future__ import annotations

import pywt
import torch
from torch import nn
from torch.nn import functional as F


class DWT(nn.Module):
    """One level of the 2-D DWT of every channel: (B, C, H, W) → (B, 4·C, H/2, W/2).

    Output channels are grouped by sub-band: the C approximations first, then the C of each of
    the three detail orientations. H and W must be even; only orthogonal two-tap wavelets keep
    that exact without padding, so the default is Haar.
    """

    def __init__(self, wavelet: str = "haar") -> None:
        super().__init__()
        bank = pywt.Wavelet(wavelet)
        if bank.dec_len != 2:
            raise ValueError(f"DWT supports two-tap wavelets only, not {wavelet!r}.")
        lo = torch.tensor(bank.dec_lo[::-1], dtype=torch.float32)
        hi = torch.tensor(bank.dec_hi[::-1], dtype=torch.float32)
        filters = [torch.outer(a, b) for a, b in ((lo, lo), (hi, lo), (lo, hi), (hi, hi))]
        self.register_buffer("filters", torch.stack(filters)[:, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        bands = F.conv2d(x.reshape(b * c, 1, h, w), self.filters, stride=2)
        return (
            bands.reshape(b, c, 4, h // 2, w // 2).transpose(1, 2).reshape(b, 4 * c, h // 2, w // 2)
        )
