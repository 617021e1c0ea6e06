"""PDMNet as a fusion method: per-pixel slice weights from the network, applied to the raw data.

The network sees only the normalised luminance; its softmax weights are then applied to the
original channels in data units, so any dtype and channel count fuses without conversion.

Decoding is per slice, so the weights never exist for all slices at once: a few slices at a
time are decoded and folded into running sums with a streaming softmax (the running maximum of
the logits keeps it exact). Memory per voxel is then what the encoder keeps, which lets tiles
grow larger, and larger tiles spend less time on their halos. The focus map needs every
slice's logits at once (model.focus_map): they are kept at half resolution, a quarter of the
voxels. The hard selection folds the same chunks into the running best slice instead
(:class:`StreamingArgmax`), so each fused pixel is one the stack holds.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch.nn import functional as F

from ..model.device import ieee_float32, resolve_device
from ..model.focus_map import FocusRun
from ..model.pdmnet import channels_last, upsample
from ..model.weights import load_model, shipped_model
from . import DEFAULT_SELECTION
from .base import TileResult

#: Slices decoded together: enough to keep the per-call overhead small, few enough that the
#: full-resolution intermediates stay a fraction of the features kept for the whole stack.
CHUNK = 4


#: A coarse focus head's 3 × 3 convolution at quarter scale reaches further. Measured on 3- and
#: 30-slice stacks tiled at 176 px (tests/test_pdmnet.py): with 96 px an untrained head's focus
#: map moved by up to 3e-3 of the slice range, with 112 px by 6e-5, a trained head's by 3e-5.
FOCUS_HEAD_HALO = 112


class PDMNetMethod:
    name = "pdmnet"
    # The receptive field is 123 px, but what lies beyond 96 px moves the fused image by less
    # than 1e-5 of the data range (measured), far inside the 1e-4 tiles must stitch to. The
    # focus map amplifies it where many slices' weights lie near the run's floor: up to 2.1e-4
    # of the slice range on a weakly textured 30-slice stack (6.0e-3 slices), within 3e-4.
    halo = 96
    bytes_per_voxel = 32  # measured: 24.5 B of its own, plus the luminance and the read
    # Besides its tiles a run takes 250-410 MB of address space (160-210 MB resident): PyTorch's
    # thread pool, oneDNN's primitives and scratch memory, cached per tile shape.
    reserve_bytes = 416 * 2**20

    def __init__(
        self, device: str = "auto", weights: str | None = None, selection: str = DEFAULT_SELECTION
    ) -> None:
        self.accumulator = ACCUMULATORS[selection]
        self.device = resolve_device(device)
        self.custom = channels_last(load_model(weights)) if weights else None
        self.to(self.device)
        self.align = self.model.stride
        # bf16 ("bfloat16") is measured by benchmarks/precision.py: with the shipped weights it
        # moves the fused image by up to 1.4e-2 of the data range, for 1.23× on an AVX-512 BF16
        # CPU, so the network runs in float32.
        self.precision = "float32"
        head = self.model.focus_head
        if head is not None and head.coarse is not None:
            self.halo = FOCUS_HEAD_HALO

    def to(self, device: torch.device | str) -> None:
        """Run on ``device`` from now on (how a GPU out of memory falls back to the CPU)."""
        self.device = torch.device(device)
        if self.custom is None:
            self.model = shipped_model(self.device)
        else:
            self.model = self.custom = self.custom.to(self.device)

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray) -> TileResult:
        n, height, width = lum.shape
        with torch.inference_mode(), ieee_float32(self.device):
            with self._network():
                feats = self.model.encode(self._padded(lum), n, CHUNK)
            fusion, focusing = self.accumulator(), FocusRun(n)
            for i in range(0, n, CHUNK):
                with self._network():
                    half, focus_half = self.model.half_logits([f[i : i + CHUNK] for f in feats])
                logits = upsample(half)[:, 0, :height, :width]
                fusion.add(logits, torch.from_numpy(block[i : i + CHUNK]).to(self.device))
                focusing.add(focus_half[:, 0])
            focus, confidence = focusing.result(height, width)
            fused = fusion.result()
        choice = getattr(fusion, "choice", None)  # the hard selection says which slice it took
        return TileResult(
            *(t.cpu().numpy() for t in (fused, focus, confidence)),
            choice=None if choice is None else choice.cpu().numpy(),
        )

    def _network(self) -> contextlib.AbstractContextManager:
        """The network's own convolutions in :attr:`precision`; the logits (bounded, in
        float32) and everything read from them stay in float32."""
        if self.precision == "float32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def _padded(self, lum: np.ndarray) -> torch.Tensor:
        """(Z, y, x) luminance → (Z, 1, Y, X) tensor padded to the network's stride."""
        _, height, width = lum.shape
        pad_y, pad_x = -height % self.align, -width % self.align
        x = torch.from_numpy(np.ascontiguousarray(lum))[:, None].to(self.device)
        if pad_y or pad_x:
            mode = "reflect" if pad_y < height and pad_x < width else "replicate"
            x = F.pad(x, (0, pad_x, 0, pad_y), mode=mode)
        return x


class StreamingSoftmax:
    """Σ softmax(logits) · data, fed a few slices at a time.

    Sums are kept relative to the running maximum logit and rescaled when it grows, so the
    result equals a softmax over all slices at once up to float rounding.
    """

    def __init__(self) -> None:
        self.peak = self.total = self.fused = torch.empty(0)

    def add(self, logits: torch.Tensor, data: torch.Tensor) -> None:
        """Logits (k, y, x) and data (k, y, x, C) of the next k slices."""
        if self.peak.numel() == 0:  # empty sums at the first chunk's maximum: rescaled by 1
            self.peak = logits.amax(0)
            self.total = torch.zeros_like(self.peak)
            self.fused = data.new_zeros(data.shape[1:])
        peak = torch.maximum(self.peak, logits.amax(0))
        e = torch.sub(logits, peak).exp_()
        rescale = torch.exp(self.peak - peak)
        self.peak = peak
        self.total = self.total.mul_(rescale).add_(e.sum(0))
        self.fused = self.fused.mul_(rescale[..., None])
        for weight, plane in zip(e, data, strict=True):  # an einsum here is a batched matmul
            self.fused.addcmul_(weight[..., None], plane)  # of 1 × k by k × 1 per pixel

    def result(self) -> torch.Tensor:
        """Fused (y, x, C)."""
        return self.fused * (1 / self.total)[..., None]


class StreamingArgmax:
    """The data of the slice with the highest logit, and which slice that is, fed a few slices
    at a time.

    The same interface as :class:`StreamingSoftmax`, for the hard selection; :attr:`choice`
    lets the tiling loop copy each pixel from the data as read. Ties go to the lowest slice
    index (the first maximum within a chunk, and a later chunk must be strictly higher), so the
    tie rule does not depend on how the slices are chunked.
    """

    def __init__(self) -> None:
        self.peak = self.fused = self.choice = torch.empty(0)
        self.start = 0

    def add(self, logits: torch.Tensor, data: torch.Tensor) -> None:
        """Logits (k, y, x) and data (k, y, x, C) of the next k slices."""
        best, index = logits.max(0)
        where = index[None, ..., None].expand(1, *data.shape[1:])
        picked = data.gather(0, where)[0]
        index = index.to(torch.int32) + self.start
        self.start += len(logits)
        if self.peak.numel() == 0:
            self.peak, self.fused, self.choice = best, picked, index
            return
        higher = best > self.peak
        self.peak = torch.where(higher, best, self.peak)
        self.fused = torch.where(higher[..., None], picked, self.fused)
        self.choice = torch.where(higher, index, self.choice)

    def result(self) -> torch.Tensor:
        """Fused (y, x, C)."""
        return self.fused


#: The accumulator of each selection (methods.SELECTIONS).
ACCUMULATORS: dict[str, type[StreamingSoftmax | StreamingArgmax]] = {
    "blend": StreamingSoftmax,
    "hard": StreamingArgmax,
}
