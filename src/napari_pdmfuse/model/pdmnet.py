"""PDMNet-N: a decision-map CNN fed DWT sub-bands at every scale, for any number of slices.

Every slice goes through one shared encoder; at each scale the Haar sub-bands of the slice's
low-pass image join the features, so the network sees the same multi-scale detail a wavelet
fusion would, but learns how to judge it. Slices talk to each other through their stack
statistics (mean and max over Z, which work for any N) and, at coarse scales, through a small
convolution along Z, since focus changes smoothly through the stack. The decoder gives one logit
per slice per pixel; a softmax over slices turns them into weights that sum to one.

There is no normalisation layer and no global pooling over the plane: the output at a pixel
depends only on a bounded neighbourhood, which is what lets tiles with a halo stitch exactly.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .dwt import DWT

DEFAULT_WIDTHS = (8, 16, 32, 48)


def conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


class CrossSlice(nn.Module):
    """Compare each slice's features with the stack's mean and max; optionally mix along Z."""

    def __init__(self, channels: int, z_kernel: int = 0) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3 * channels, channels, 1)
        self.along_z = nn.Conv3d(channels, channels, (z_kernel, 3, 3)) if z_kernel else None

    def forward(self, f: torch.Tensor, n: int) -> torch.Tensor:
        bn, c, h, w = f.shape
        g = f.reshape(bn // n, n, c, h, w)
        stats = torch.cat(_mean_and_max(g), 1)  # (B, 2C, h, w): once per stack
        # mix([f, stats]) split by input channels: the stack part is computed once, not N times.
        own = F.conv2d(f, self.mix.weight[:, :c], self.mix.bias)
        shared = F.conv2d(stats, self.mix.weight[:, c:])
        mixed = own.reshape(bn // n, n, c, h, w) + shared[:, None]
        f = f + mixed.relu_().reshape(bn, c, h, w)  # in place: add's gradient needs no output
        if self.along_z is not None:
            # A kernel symmetric in Z keeps the network exactly equivariant to reversing the
            # stack, and replicated end slices make identical slices get identical weights.
            kernel = self.along_z.weight
            kernel = 0.5 * (kernel + kernel.flip(2))
            z = f.reshape(bn // n, n, c, h, w).transpose(1, 2)  # (B, C, N, h, w)
            reach = kernel.shape[2] // 2
            z = F.pad(z, (0, 0, 0, 0, reach, reach), mode="replicate")
            z = F.conv3d(z, kernel, self.along_z.bias, padding=(0, 1, 1))
            f = f + z.relu_().transpose(1, 2).reshape(bn, c, h, w)
        return f


class PDMNet(nn.Module):
    """Slices (B, N, H, W), normalised to about [0, 1] → logits (B, N, H, W).

    H and W must be multiples of :attr:`stride`.
    """

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.stride = 2 ** len(widths)
        self.dwt = DWT("haar")
        self.encoders = nn.ModuleList()
        self.cross = nn.ModuleList()
        cin = 0
        for level, width in enumerate(widths):
            self.encoders.append(
                nn.Sequential(
                    conv(cin + 4, width),
                    nn.ReLU(inplace=True),
                    conv(width, width),
                    nn.ReLU(inplace=True),
                )
            )
            # At half resolution a cross-slice mix costs more than it brings: the softmax over
            # slices already compares the finest features.
            z_kernel = 3 if level >= len(widths) - 2 else 0
            self.cross.append(CrossSlice(width, z_kernel) if level else nn.Identity())
            cin = width
        self.decoders = nn.ModuleList(
            nn.Sequential(conv(widths[i + 1] + widths[i], widths[i]), nn.ReLU(inplace=True))
            for i in range(1, len(widths) - 1)
        )
        # The finest level is only added to: a 1×1 projection applied before upsampling (it
        # commutes with bilinear interpolation) and a 1×1 head keep full-size work minimal.
        self.project = nn.Conv2d(widths[1], widths[0], 1)
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, h, w = x.shape
        low = x.reshape(b * n, 1, h, w)
        feats: list[torch.Tensor] = []
        f = None
        for level, (encoder, cross) in enumerate(zip(self.encoders, self.cross, strict=True)):
            bands = self.dwt(low)
            low = bands[:, :1] * 0.5  # Haar LL is twice the local mean: keep intensities in range
            inputs = bands if f is None else torch.cat([F.avg_pool2d(f, 2), bands], 1)
            f = encoder(inputs)
            f = cross(f, n) if level else f
            feats.append(f)
        for decoder, skip in zip(reversed(self.decoders), reversed(feats[1:-1]), strict=True):
            f = decoder(torch.cat([_up(f), skip], 1))
        f = (_up(self.project(f)) + feats[0]).relu_()
        return _up(self.head(f)).reshape(b, n, h, w)


def _mean_and_max(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max over dim 1, slice by slice: each step reads one contiguous slice, which
    is about ten times faster than torch's strided reduction on channels-last features."""
    total = peak = g[:, 0]
    for i in range(1, g.shape[1]):
        total = total + g[:, i]
        peak = torch.maximum(peak, g[:, i])
    return total / g.shape[1], peak


def channels_last(model: PDMNet) -> PDMNet:
    """Store the 2-D convolution weights channels-last, which oneDNN runs about a third faster.

    PDMNet's narrow layers (1–8 channels over large planes) are where the planar layout hurts
    most; the numbers are unchanged up to float rounding.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return model


def _up(f: torch.Tensor) -> torch.Tensor:
    return F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)


def weights_to_outputs(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel slice weights (B, N, H, W) → focus index and confidence, each (B, H, W).

    The focus index is the weights' mean slice position. Confidence is one minus the spread of
    the weights over Z relative to the spread of uniform weights, so a sharp peak (even split
    between two neighbouring slices) is confident and a flat distribution is not.
    """
    n = weights.shape[1]
    z = torch.arange(n, dtype=weights.dtype, device=weights.device)
    focus = torch.einsum("bnhw,n->bhw", weights, z)
    spread = (torch.einsum("bnhw,n->bhw", weights, z * z) - focus**2).clamp_min(0).sqrt()
    uniform = ((n * n - 1) / 12) ** 0.5
    return focus, (1 - spread / uniform).clamp(0, 1)
