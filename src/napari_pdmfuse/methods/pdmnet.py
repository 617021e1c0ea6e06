"""PDMNet as a fusion method: per-pixel slice weights from the network, applied to the raw data.

The network sees only the normalised luminance; its softmax weights are then applied to the
original channels in data units, so any dtype and channel count fuses without conversion.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from ..model.device import resolve_device
from ..model.pdmnet import channels_last, weights_to_outputs
from ..model.weights import load_model, shipped_model
from .base import TileResult


class PDMNetMethod:
    name = "pdmnet"
    halo = 144  # measured receptive field: 123 px, plus one stride of phase
    bytes_per_voxel = 48

    def __init__(self, device: str = "auto", weights: str | None = None) -> None:
        self.device = resolve_device(device)
        self.custom = channels_last(load_model(weights)) if weights else None
        self.to(self.device)
        self.align = self.model.stride

    def to(self, device: torch.device | str) -> None:
        """Run on ``device`` from now on (how a GPU out of memory falls back to the CPU)."""
        self.device = torch.device(device)
        if self.custom is None:
            self.model = shipped_model(self.device)
        else:
            self.model = self.custom = self.custom.to(self.device)

    def weights(self, lum: np.ndarray) -> torch.Tensor:
        """(Z, y, x) luminance → (Z, y, x) softmax weights; pads to the network's stride."""
        _, height, width = lum.shape
        pad_y, pad_x = -height % self.align, -width % self.align
        x = torch.from_numpy(np.ascontiguousarray(lum))[None].to(self.device)
        if pad_y or pad_x:
            mode = "reflect" if pad_y < height and pad_x < width else "replicate"
            x = F.pad(x, (0, pad_x, 0, pad_y), mode=mode)
        with torch.inference_mode():
            logits = self.model(x)[..., :height, :width]
            return torch.softmax(logits.contiguous(), 1)[0]

    def fuse_tile(self, block: np.ndarray, lum: np.ndarray) -> TileResult:
        weights = self.weights(lum)
        with torch.inference_mode():
            focus, confidence = weights_to_outputs(weights[None])
            data = torch.from_numpy(block).to(self.device)
            fused = torch.einsum("zyx,zyxc->yxc", weights, data)
        return TileResult(*(t.cpu().numpy() for t in (fused, focus[0], confidence[0])))
