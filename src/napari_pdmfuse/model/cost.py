"""What PDMNet costs: multiply-adds of every convolution per input voxel, by scale.

The light design's budget (a third of the first design's) is checked against this count, and
``benchmarks/profile_pdmnet.py`` prints it beside the measured time.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from .pdmnet import PDMNet


def multiply_adds_per_voxel(model: PDMNet, slices: int = 8, side: int = 128) -> dict[str, float]:
    """Multiply-adds of each convolution per input voxel, keyed by the scale and kind
    ("1/4 2-D"), counted on a stack of ``slices`` × ``side``² random slices."""
    x = torch.rand(slices, 1, side, side)
    counts: dict[str, float] = defaultdict(float)
    voxels = x.numel()

    def hook(module, inputs, output):
        kernel = module.weight[0].numel()  # C_in · k…: multiply-adds per output value
        scale = side // output.shape[-1]
        kind = "3-D" if isinstance(module, torch.nn.Conv3d) else "2-D"
        counts[f"1/{scale} {kind}"] += kernel * output.numel() / voxels

    convolutions = (torch.nn.Conv2d, torch.nn.Conv3d)
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, convolutions)]
    try:
        # with gradients: the reference formulation, whose layers are module calls the hooks
        # see (inference does the same multiply-adds in other calls: model.fastops)
        with torch.enable_grad():
            model.half_logits(model.encode(x, slices))
    finally:
        for h in hooks:
            h.remove()
    # CrossSlice calls its convolutions' weights directly, outside any module call: the 1 × 1
    # mix of each slice's own features (the stack's part is once per stack) and along Z.
    for level, cross in enumerate(model.cross):
        if hasattr(cross, "mix"):
            c, area = cross.mix.out_channels, 4 ** (level + 1)
            counts[f"1/{2 ** (level + 1)} 2-D"] += c * c / area
            if cross.along_z is not None:
                counts[f"1/{2 ** (level + 1)} 3-D"] += cross.along_z.weight[0].numel() * c / area
    return dict(counts)
