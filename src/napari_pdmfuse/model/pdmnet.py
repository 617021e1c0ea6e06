"""PDMNet-N: a decision-map CNN fed DWT sub-bands at every scale, for any number of slices.

Every slice goes through one shared encoder; at each scale the Haar sub-bands of the slice's
low-pass image join the features, so the network sees the same multi-scale detail a wavelet
fusion would, but learns how to judge it. Slices talk to each other through their stack
statistics (mean and max over Z, which work for any N) and, at coarse scales, through a small
convolution along Z, since focus changes smoothly through the stack. The decoder gives one logit
per slice per pixel; a softmax over slices turns them into weights that sum to one.

The shipped model carries a second, focus head on the same decoder features: its own logits
per slice are the ones the focus map is read from (:mod:`.focus_map`; without a head, from the
fusion logits). One set of weights cannot serve both outputs well where neighbouring planes
are nearly as sharp: the fused image wants whatever blend of them looks sharpest and least
noisy, the focus map wants weights whose mean lands on the sub-slice depth.

There is no normalisation layer and no global pooling over the plane: the output at a pixel
depends only on a bounded neighbourhood, which is what lets tiles with a halo stitch exactly.

The light design (``light=True``) costs a third of the first one per voxel: narrower layers, a
decoder that upsamples a 1 × 1 projection and adds it to the skip before one 3 × 3 convolution
(instead of a 3 × 3 convolution over both concatenated), and at ⅛ scale a convolution along Z
alone. Its logits are bounded (``logit_bound``: B · tanh(x / B)), so that rounding the features
to a low precision (bf16) moves them, and the fused image, by little.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .dwt import DWT
from .fastops import conv_relu, level_inputs

DEFAULT_WIDTHS = (8, 16, 32, 48)
#: The light design's widths and logit bound.
LIGHT_WIDTHS = (6, 12, 24, 28)
LIGHT_LOGIT_BOUND = 10.0
#: Hidden channels of the coarse focus head.
FOCUS_WIDTH = 16


def conv(cin: int, cout: int, kernel: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, padding=kernel // 2)


class CrossSlice(nn.Module):
    """Compare each slice's features with the stack's mean and max; optionally mix along Z."""

    def __init__(self, channels: int, z_kernel: int = 0, spatial: int = 3) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3 * channels, channels, 1)
        self.along_z = (
            nn.Conv3d(channels, channels, (z_kernel, spatial, spatial)) if z_kernel else None
        )

    def forward(self, f: torch.Tensor, n: int, chunk: int = 0) -> torch.Tensor:
        """``chunk`` > 0 (inference on one stack only): mix that many slices at a time, in
        place, so the mixing never holds a second copy of the features."""
        bn, c, h, w = f.shape
        g = f.reshape(bn // n, n, c, h, w)
        stats = torch.cat(_mean_and_max(g), 1)  # (B, 2C, h, w): once per stack
        # mix([f, stats]) split by input channels: the stack part is computed once, not N times.
        own_weight = self.mix.weight[:, :c]
        shared = F.conv2d(stats, self.mix.weight[:, c:])
        if chunk and bn == n and not torch.is_grad_enabled():
            for i in range(0, n, chunk):
                part = f[i : i + chunk]
                part += F.conv2d(part, own_weight, self.mix.bias).add_(shared).relu_()
        else:
            own = F.conv2d(f, own_weight, self.mix.bias)
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
            side = kernel.shape[3] // 2
            z = F.conv3d(z, kernel, self.along_z.bias, padding=(0, side, side))
            f = f + z.relu_().transpose(1, 2).reshape(bn, c, h, w)
        return f


class PDMNet(nn.Module):
    """Slices (B, N, H, W), normalised to about [0, 1] → fusion logits (B, N, H, W) and, with
    ``focus_head``, focus-map logits at half resolution (else None).

    H and W must be multiples of :attr:`stride`.
    """

    def __init__(
        self,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        focus_head: str | None = None,
        light: bool = False,
        logit_bound: float = 0.0,
    ) -> None:
        super().__init__()
        self.widths = tuple(widths)
        self.light = light
        self.logit_bound = float(logit_bound)
        self.stride = 2 ** len(widths)
        self.dwt = DWT()
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
            # The light design mixes along Z alone at ⅛ scale: the 3 × 3 × 3 kernel there was
            # a fifth of the first design's cost.
            spatial = 1 if light and level == len(widths) - 2 else 3
            self.cross.append(CrossSlice(width, z_kernel, spatial) if level else nn.Identity())
            cin = width
        self.decoders = nn.ModuleList(
            LightDecoder(widths[i + 1], widths[i])
            if light
            else nn.Sequential(conv(widths[i + 1] + widths[i], widths[i]), nn.ReLU(inplace=True))
            for i in range(1, len(widths) - 1)
        )
        # The finest level is only added to: a 1×1 projection applied before upsampling (it
        # commutes with bilinear interpolation) and a 1×1 head keep full-size work minimal.
        self.project = nn.Conv2d(widths[1], widths[0], 1)
        self.head = nn.Conv2d(widths[0], 1, 1)
        self.focus_head = (
            FocusHead(widths[0], widths[1], coarse=focus_head == "coarse") if focus_head else None
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Slices (B, N, H, W) → fusion logits (B, N, H, W) and focus logits at half
        resolution (B, N, H/2, W/2), or None without a focus head."""
        b, n, h, w = x.shape
        fusion, focus = self.half_logits(self.encode(x.reshape(b * n, 1, h, w), n))
        focus = None if self.focus_head is None else focus.reshape(b, n, h // 2, w // 2)
        return upsample(fusion).reshape(b, n, h, w), focus

    def encode(self, x: torch.Tensor, n: int, chunk: int = 0) -> list[torch.Tensor]:
        """Slices (S, 1, H, W) of stacks of ``n`` → features at every scale, finest first.

        The convolutions see one slice at a time, so they can run ``chunk`` slices at a time
        (0: all at once) to bound the memory of large tiles; only the cross-slice statistics
        need the whole stack.
        """
        if not torch.is_grad_enabled() and x.device.type == "cpu":
            return self._encode_fused(x, n, chunk)
        total = x.shape[0]
        k = chunk or total
        finest = pooled = low = torch.empty(0)
        for i in range(0, total, k):
            bands = self.dwt(x[i : i + k])
            f = self.encoders[0](bands)
            finest = _place(finest, f, i, total)
            pooled = _place(pooled, F.avg_pool2d(f, 2), i, total)
            # Haar LL is twice the local mean: halve it to keep intensities in range
            low = _place(low, bands[:, :1] * 0.5, i, total)
        feats = [finest]
        for encoder, cross in zip(self.encoders[1:], self.cross[1:], strict=True):
            if len(feats) > 1:
                pooled = F.avg_pool2d(feats[-1], 2)
            bands = self.dwt(low)
            low = bands[:, :1] * 0.5
            f = torch.empty(0)
            for i in range(0, total, k):
                part = encoder(torch.cat([pooled[i : i + k], bands[i : i + k]], 1))
                f = _place(f, part, i, total)
            feats.append(cross(f, n, chunk))
        return feats

    def _encode_fused(self, x: torch.Tensor, n: int, chunk: int) -> list[torch.Tensor]:
        """:meth:`encode` without gradients, in fewer passes over memory (:mod:`.fastops`):
        each level's inputs written once, pooled chunk by chunk from the finer features as
        they are read, each convolution fused with its ReLU. On the CPU, where it was measured and
        tested: the same values to float rounding."""
        total = x.shape[0]
        k = chunk or total
        feats: list[torch.Tensor] = []
        low = x  # the image each level's Haar level is taken of: the slices, then local means
        for level, (encoder, cross) in enumerate(zip(self.encoders, self.cross, strict=True)):
            first, second = encoder[0], encoder[2]
            pooled = first.in_channels - 4
            # the inputs come as 2 × 2 sums (four times the mean) and Haar sums (twice the
            # sub-bands); the weights take the factors back, exactly: they are powers of two
            weight = torch.cat([first.weight[:, :pooled] * 0.25, first.weight[:, pooled:] * 0.5], 1)
            f = next_low = torch.empty(0)
            for i in range(0, total, k):
                inputs = level_inputs(low[i : i + k], feats[-1][i : i + k] if feats else None)
                f = _place(f, conv_relu(second, conv_relu(first, inputs, weight)), i, total)
                if level + 1 < len(self.encoders):
                    # the LL sum halved twice: the Haar LL halved, the local mean
                    next_low = _place(next_low, inputs[:, pooled : pooled + 1] * 0.25, i, total)
            feats.append(cross(f, n, chunk) if level else f)
            low = next_low
        return feats

    def half_logits(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of some slices (any subset: decoding is per slice) → fusion and focus
        logits at half resolution (S, 1, H/2, W/2), which callers upsample bilinearly to full
        size. Without a focus head the focus map is read from the fusion logits."""
        f, quarter = self.decoded(feats)
        head = self.focus_head
        if head is not None and head.coarse is None and not torch.is_grad_enabled():
            # Both heads are 1 × 1 convolutions: as one, they read the features once.
            weight = torch.cat([self.head.weight, head.fine.weight])
            both = self.bounded(F.conv2d(f, weight, torch.cat([self.head.bias, head.fine.bias])))
            return both[:, :1], both[:, 1:]
        fusion = self.bounded(self.head(f))
        if head is None:
            return fusion, fusion
        return fusion, self.bounded(head(f, quarter))

    def bounded(self, logits: torch.Tensor) -> torch.Tensor:
        """B · tanh(logits / B) with B = :attr:`logit_bound` (none when 0), computed in float32:
        a softmax over slices needs only their differences, and a bound keeps the rounding of
        large logits from moving the weights. Without gradients, in place in one planar
        (contiguous) tensor, whose channels are then contiguous too."""
        if not self.logit_bound:
            return logits
        bound = self.logit_bound
        if torch.is_grad_enabled():
            return torch.tanh(logits.float() / bound) * bound
        out = torch.empty(logits.shape, dtype=torch.float32, device=logits.device)
        return torch.div(logits.float(), bound, out=out).tanh_().mul_(bound)

    def decoded(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's features at half resolution, which the heads read, and at a quarter,
        which the focus head reads too."""
        f = feats[-1]
        for decoder, skip in zip(reversed(self.decoders), reversed(feats[1:-1]), strict=True):
            f = decoder(f, skip) if self.light else decoder(torch.cat([upsample(f), skip], 1))
        return upsample(self.project(f)).add_(feats[0]).relu_(), f


class LightDecoder(nn.Module):
    """The coarser features projected to the skip's width by a 1 × 1 convolution before
    upsampling (it commutes with bilinear interpolation), added to the skip, then one 3 × 3
    convolution, residual: a ninth of a 3 × 3 convolution over both concatenated."""

    def __init__(self, coarse: int, fine: int) -> None:
        super().__init__()
        self.project = nn.Conv2d(coarse, fine, 1)
        self.conv = conv(fine, fine)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        f = upsample(self.project(coarse)).add_(skip).relu_()
        return f + conv_relu(self.conv, f)


class FocusHead(nn.Module):
    """Focus-map logits at half resolution from the decoder's features of one slice.

    The shipped head (``coarse=False``) is a second 1 × 1 read of the half-resolution features
    beside the fusion head's: sub-slice focus wants weight on the neighbours of the sharpest
    slice, which the fused image does not, and one read cannot serve both. It costs a few
    multiply-adds per voxel and reaches no further than the fusion head. With ``coarse``, a
    non-linear part at quarter resolution, where the features carry most of what tells the
    depth, is added; it reaches further (a wider halo) and costs 8 % of the network.
    """

    def __init__(self, half: int, quarter: int, coarse: bool = False) -> None:
        super().__init__()
        self.fine = nn.Conv2d(half, 1, 1)
        self.coarse = (
            nn.Sequential(
                conv(quarter, FOCUS_WIDTH), nn.ReLU(inplace=True), nn.Conv2d(FOCUS_WIDTH, 1, 1)
            )
            if coarse
            else None
        )

    def forward(self, f: torch.Tensor, quarter: torch.Tensor) -> torch.Tensor:
        if self.coarse is None:
            return self.fine(f)
        return self.fine(f) + upsample(self.coarse(quarter))


def _place(out: torch.Tensor, part: torch.Tensor, start: int, total: int) -> torch.Tensor:
    """Write ``part`` at ``start`` of a (total, ...) tensor allocated on first use, in the
    part's memory layout, so chunks fill one buffer instead of being concatenated (2× peak)."""
    if len(part) == total:
        return part
    if out.numel() == 0:
        layout = (
            torch.channels_last
            if part.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        out = torch.empty(
            (total, *part.shape[1:]), dtype=part.dtype, device=part.device, memory_format=layout
        )
    out[start : start + len(part)] = part
    return out


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


def upsample(f: torch.Tensor) -> torch.Tensor:
    """Bilinear ×2, as the decoder and the heads upsample."""
    return F.interpolate(f, scale_factor=2, mode="bilinear", align_corners=False)


def mean_focus(weights: torch.Tensor) -> torch.Tensor:
    """Slice weights (B, N, H, W) → their mean slice position (B, H, W): the differentiable
    focus index training optimises. Inference reads it over the run of slices around the
    best one instead (:mod:`.focus_map`)."""
    z = torch.arange(weights.shape[1], dtype=weights.dtype, device=weights.device)
    return torch.einsum("bnhw,n->bhw", weights, z)


def mean_focus_of_logits(logits: torch.Tensor) -> torch.Tensor:
    """Focus logits at half resolution (B, N, h, w) → the softmax weights' mean slice
    position, upsampled to (B, 2h, 2w)."""
    return upsample(mean_focus(torch.softmax(logits, 1))[:, None])[:, 0]
