"""The focus map and its confidence from per-slice logits, a few slices at a time.

The focus index is read around the best slice k, from two estimates blended by how broad the
*run* of slices around it is (the slices out to where a slice's weight falls to
:data:`RUN_FLOOR` of the best's, each counted with the product of the soft gates from k out to
it):

- the *vertex*: k plus the offset of the apex of the parabola through the logits of k − 1, k
  and k + 1. A Gaussian focus profile over z has exactly quadratic logits, so the vertex finds
  its centre however far the neighbours lie below the floor: where neighbouring planes are
  much blurrier than the best one (coarse z steps), a smooth surface reads smooth instead of
  snapping to whole slices. Offsets within :data:`DEAD_ZONE` of 0 read 0, so a flat terrace on
  a plane reads that plane (the network's neighbours are not quite symmetric there). At the
  ends of the stack, where k has one neighbour, it is the mean of k and that neighbour under
  their gated weights, which is the run's mean wherever the run is those two slices.
- the run's mean slice position, where the run is broad (:data:`BROAD`): it averages over more
  slices than the vertex's three and stays steady where the peak is flat and the vertex is not.
  Over all slices the mean is pulled off the plane in focus wherever a pixel's weights have a
  second mode (beside a depth step, or a defocused bright edge) and towards the middle at the
  ends of the stack; within the run it is not.

The read-out is a continuous function of the logits wherever the best slice does not jump
between planes far apart: the run ends softly, and when the best slice passes to a neighbour
both slices give the same vertex (halfway), the same run and so the same blend. Tiles stitch
within 3e-4 of the slice range: the read-out amplifies the tiny differences the halo leaves in
the logits. Where two planes far apart tie for the best slice a tile may read either;
confidence is then near 0. Confidence comes from the spread of all the weights, since a second
mode is a doubt the run leaves out. Training scores the same read-out through
:func:`run_focus`. Results and the choice of the constants: ``benchmarks/subslice.py``,
``benchmarks/focus_floor.py`` and docs/MODEL.md.
"""

from __future__ import annotations

import torch

from .pdmnet import upsample

#: A slice whose weight is this fraction of the best slice's or less ends the run around it;
#: from twice this fraction on, the run goes on through it in full.
RUN_FLOOR = 0.05
#: The run's total weight, in units of the best slice's, from which its mean takes over from
#: the vertex, and from which it reads alone; at most 3, so that a flat top of three slices,
#: where the vertex is 0 / 0, reads the mean (measured in ``benchmarks/subslice.py``).
BROAD = (1.5, 2.5)
#: Vertex offsets (slices) up to this read 0, from twice it on as they are, linear between.
DEAD_ZONE = 0.07


class FocusRun:
    """Focus index and confidence of one stack's per-slice logits, fed a few slices at a time.

    The network's focus logits come at half resolution, and the read-out works there too: the
    focus map and confidence are computed at half resolution and upsampled bilinearly, as the
    logits would have been. That is a quarter of the work of reading upsampled logits (the
    read-out was then half of a light network's tile), and the map holds no finer detail
    than the logits it is read from. The stack's logits are kept (a quarter of the voxels),
    and the pass up the stack works on one plane at a time, which keeps it in cache.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.start = 0
        self.half = self.peak = self.best = torch.empty(0)

    def add(self, half: torch.Tensor) -> None:
        """Logits of the next k slices at half resolution (k, y/2, x/2)."""
        top, where = half.max(0)
        where = where.to(torch.int32)
        if self.start == 0:
            self.peak, self.best = top, where
            self.half = half.new_empty((self.n, *half.shape[1:]))
        else:
            self.best = torch.where(top > self.peak, where + self.start, self.best)
            self.peak = torch.maximum(top, self.peak)
        self.half[self.start : self.start + len(half)] = half
        self.start += len(half)

    def result(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Focus index and confidence (height, width): read at half resolution, upsampled and
        cropped."""
        focus, confidence = self.read()
        both = upsample(torch.stack([focus, confidence])[:, None])[:, 0, :height, :width]
        return both[0], both[1]

    def read(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Focus index and confidence at the logits' resolution, in one pass up the stack."""
        peak = self.peak
        total, z_sum, z2_sum, run_total, run_z_sum = (torch.zeros_like(peak) for _ in range(5))
        # Plane-sized buffers, reused, and arithmetic instead of masks: masked writes and
        # comparisons cost several times an addition here.
        e, gate, start, previous, through = (torch.empty_like(peak) for _ in range(5))
        below, below_z = torch.zeros_like(peak), torch.zeros_like(peak)
        lower, upper = torch.zeros_like(peak), torch.zeros_like(peak)  # logits of k ∓ 1
        at_best = torch.empty_like(self.best, dtype=torch.bool)
        through.zero_()
        previous.zero_()
        last = peak  # the previous plane's logits; unused at the first
        # A slice counts with the product of the gates of the slices from the best one out to
        # it, itself included.
        for k, logits in enumerate(self.half):
            torch.sub(logits, peak, out=e).exp_()  # 1 at the best slice
            total += e
            z_sum.add_(e, alpha=k)
            z2_sum.add_(e, alpha=k * k)
            torch.mul(e, 1 / RUN_FLOOR, out=gate).sub_(1).clamp_(0, 1)
            start.copy_(torch.eq(self.best, k, out=at_best))  # 1 where the run starts
            if k:
                lower.addcmul_(start, last)
                upper.addcmul_(previous, logits)  # previous: 1 where the best slice is k - 1
            last = logits
            # Below the best slice: running sums of the slices so far, each already times the
            # gates from it up to here; at the best slice they are the run's lower part.
            run_total.addcmul_(below, start)
            run_z_sum.addcmul_(below_z, start)
            below.add_(e).mul_(gate)
            below_z.add_(e, alpha=k).mul_(gate)
            # From the best slice up: the product of the gates since the start.
            torch.maximum(through, previous, out=through).mul_(gate)
            previous, start = start, previous
            e.mul_(torch.maximum(through, previous, out=gate))
            run_total += e
            run_z_sum.add_(e, alpha=k)
        mean = run_z_sum / run_total
        focus = read_out(self.best, self.n, peak - lower, peak - upper, mean, run_total)
        return focus, confidence(z_sum / total, z2_sum / total, self.n)


def read_out(
    best: torch.Tensor,
    n: int,
    fall_down: torch.Tensor,
    fall_up: torch.Tensor,
    mean: torch.Tensor,
    run_total: torch.Tensor,
) -> torch.Tensor:
    """The focus index from the best slice of ``n``, how far the logits fall from it to the
    slices below and above (≥ 0; ignored where there is no such slice), and the run's mean
    slice position and total weight (in units of the best slice's)."""
    if n < 2:
        return mean
    # The vertex's offset, in [-0.5, 0.5]: halfway where a neighbour ties with the best slice.
    # Where both neighbours tie with it (0 / 0) it is 0, and the run's mean reads alone.
    offset = (fall_down - fall_up) / (2 * (fall_down + fall_up)).clamp_min(1e-12)
    size = offset.abs().clamp(max=0.5)
    size = torch.minimum((2 * (size - DEAD_ZONE)).clamp_min(0), size)
    vertex = best + size.copysign(offset)
    up, down = gated(fall_up), gated(fall_down)
    vertex = torch.where(best == 0, up / (1 + up), vertex)
    vertex = torch.where(best == n - 1, (n - 1) - down / (1 + down), vertex)
    broad = ((run_total - BROAD[0]) / (BROAD[1] - BROAD[0])).clamp(0, 1)
    return torch.lerp(vertex, mean, broad)


def gated(fall: torch.Tensor) -> torch.Tensor:
    """The weight of a neighbour whose logit lies ``fall`` below the best's, times its gate."""
    weight = torch.exp(-fall)
    return weight * (weight / RUN_FLOOR - 1).clamp(0, 1)


def run_focus(weights: torch.Tensor) -> torch.Tensor:
    """The focus index of :class:`FocusRun` from whole weights (B, N, H, W) at once, and
    differentiable (through the gates and the vertex too, though not within its dead zone), so
    training can score what inference reads."""
    n = weights.shape[1]
    mean, total, best = run_mean(weights)
    logs = weights.clamp_min(torch.finfo(weights.dtype).tiny).log()
    peak = logs.gather(1, best)
    fall_down = peak - logs.gather(1, (best - 1).clamp_min(0))
    fall_up = peak - logs.gather(1, (best + 1).clamp_max(n - 1))
    top = weights.gather(1, best)[:, 0]
    return read_out(best[:, 0], n, fall_down[:, 0], fall_up[:, 0], mean, total / top)


def run_mean(weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The run around the best slice of whole weights (B, N, H, W): its mean slice position
    and total weight (B, H, W), each slice counted with the product of the gates from the best
    one out to it, and the best slice (B, 1, H, W)."""
    n = weights.shape[1]
    top = weights.amax(1, keepdim=True)
    gate = (weights / top / RUN_FLOOR - 1).clamp(0, 1)
    z = torch.arange(n, device=weights.device).view(1, n, 1, 1)
    best = weights.argmax(1, keepdim=True)
    above, below = z >= best, z <= best
    ones = torch.ones_like(gate)
    up = torch.where(above, gate, ones).cumprod(1)
    down = torch.where(below, gate, ones).flip(1).cumprod(1).flip(1)
    counted = weights * torch.where(above, up, down)
    total = counted.sum(1)
    return (counted * z.to(weights.dtype)).sum(1) / total, total, best


def confidence(mean: torch.Tensor, mean_square: torch.Tensor, n: int) -> torch.Tensor:
    """One minus the spread of the weights over Z relative to the spread of uniform weights,
    so a sharp peak (or an even split between two neighbouring slices) is confident and a
    flat distribution is not."""
    spread = (mean_square - mean**2).clamp_min(0).sqrt()
    uniform = ((n * n - 1) / 12) ** 0.5
    return (1 - spread / uniform).clamp(0, 1)
