"""The operations PDMNet's inference runs in: the same arithmetic in fewer passes over memory.

PDMNet's layers are narrow (6–28 channels), so on a CPU their time goes to passes over memory
more than to arithmetic: a Haar level's sub-bands stacked into a second copy and scaled in a
third pass, a pooling kernel that handles few channels poorly, the concatenation of both, a
ReLU as a pass of its own. Inference (no gradients) writes each level's inputs once, into the
channels-last tensor its first convolution reads, and fuses each convolution with its ReLU;
training differentiates the reference formulation in :mod:`.pdmnet`.

Every input is computed as the reference computes it: the same sums in the same order, and the
factors ½ (Haar) and ¼ (mean pooling) moved into the convolution weights, where a power of two
is exact. The convolutions themselves run in other kernels, so the features equal the
reference's to float rounding (within 1e-5, tested).
"""

from __future__ import annotations

import functools

import torch
from torch import nn
from torch.nn import functional as F


def fusable(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` may run as one oneDNN call with its ReLU fused (what
    ``torch.compile`` emits): float32 on the CPU, without gradients or autocast, which that
    call has not."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_grad_enabled()
        and not _autocast_on_cpu()
        and conv_pointwise() is not None
    )


def conv_relu(layer: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor | None = None):
    """ReLU(layer(x)), with ``weight`` in place of the layer's if given; where :func:`fusable`
    one call, which applies the ReLU as the output is written instead of in a second pass."""
    if fusable(x):
        return conv_pointwise()(
            x,
            layer.weight if weight is None else weight,
            layer.bias,
            list(layer.padding),
            list(layer.stride),
            list(layer.dilation),
            layer.groups,
            "relu",
            [],
            "",
        )
    if weight is None:
        return layer(x).relu_()
    return F.conv2d(
        x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups
    ).relu_()


def level_inputs(low: torch.Tensor, finer: torch.Tensor | None = None) -> torch.Tensor:
    """The inputs of an encoder level, (S, C + 4, h, w) channels-last: the 2 × 2 sums of the
    finer level's features (S, C, 2h, 2w), channels-last (four times their mean pooling, summed
    in the pooling's order), then the Haar sums of the image ``low`` (S, 1, 2h, 2w) (twice the
    sub-bands of :class:`~.dwt.DWT`, in its order).

    Each value is written once, straight into the tensor the convolution reads.
    """
    s, _, height, width = low.shape
    h, w = height // 2, width // 2
    c = 0 if finer is None else finer.shape[1]
    out = low.new_empty((s, h, w, c + 4))
    if finer is not None:
        blocks = finer.permute(0, 2, 3, 1).reshape(s, h, 2, w, 2 * c)  # a view
        pooled = out[..., :c]
        torch.add(blocks[:, :, 0, :, :c], blocks[:, :, 0, :, c:], out=pooled)
        pooled.add_(blocks[:, :, 1, :, :c]).add_(blocks[:, :, 1, :, c:])
    x = low[:, 0]
    top_left, top_right = x[:, 0::2, 0::2], x[:, 0::2, 1::2]
    bottom_left, bottom_right = x[:, 1::2, 0::2], x[:, 1::2, 1::2]
    top, bottom = top_left + top_right, bottom_left + bottom_right
    top_step, bottom_step = top_left - top_right, bottom_left - bottom_right
    torch.add(top, bottom, out=out[..., c])
    torch.sub(top, bottom, out=out[..., c + 1])
    torch.add(top_step, bottom_step, out=out[..., c + 2])
    torch.sub(top_step, bottom_step, out=out[..., c + 3])
    return out.permute(0, 3, 1, 2)


def _autocast_on_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


@functools.cache
def conv_pointwise():
    """oneDNN's convolution with a fused element-wise operation, if this torch build has it
    and it computes what the reference does on a probe. It is a private operator: a torch
    release may drop it or change its arguments, and inference then falls back instead of
    failing."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        op = torch.ops.mkldnn._convolution_pointwise
        with torch.no_grad():
            numbers = torch.Generator().manual_seed(0)  # the global generator is the user's
            x, weight, bias = (
                torch.randn(shape, generator=numbers) for shape in ((1, 3, 6, 6), (2, 3, 3, 3), 2)
            )
            got = op(x, weight, bias, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
            expected = F.conv2d(x, weight, bias, padding=1).relu_()
        return op if torch.allclose(got, expected, rtol=1e-4, atol=1e-5) else None
    except (AttributeError, RuntimeError, TypeError):
        return None
