"""Training examples for PDMNet: rendered stacks as tensors, batches, validation.

Every stack is rendered here, seeded, from scikit-image's bundled images and procedural
specimens; validation content and seeds are disjoint from training (see :mod:`.rendering`).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..model.focus_map import run_focus
from ..model.losses import focus_l1, fusion_loss
from ..model.pdmnet import PDMNet, mean_focus, upsample
from ..stack import as_stack, normalisation
from .mix import DEFAULT_MIX
from .rendering import (
    BLUR_RANGE,
    DEPTH_KINDS,
    TRAIN_IMAGES,
    VALIDATION_IMAGES,
    RenderedStack,
    random_stack,
)

VALIDATION_SEED = 10_000
# The second stage's deep stacks: 17 to 32 slices, blurred 0.5–2.5 px per slice of distance
# (before the slight boost short stacks get), so a surface spans several sharp-ish slices.
DEEP_SLICE_COUNTS = tuple(range(17, 33))
DEEP_BLUR_RANGE = (0.5, 2.5)


@dataclass
class Example:
    slices: np.ndarray  # (N, H, W) float16, normalised luminance
    truth: np.ndarray  # (H, W) float32, same units
    depth: np.ndarray  # (H, W) float32, slices
    textured: np.ndarray  # (H, W) bool


def to_example(r: RenderedStack) -> Example:
    """Normalise a rendered stack exactly as inference does, truth in the same units."""
    stack = as_stack(r.stack)
    norm = normalisation(stack)
    slices = norm.luminance(np.asarray(stack.data, dtype=np.float32))
    truth = norm.luminance(r.truth.reshape(1, *r.truth.shape[:2], -1))[0]
    return Example(slices.astype(np.float16), truth, r.depth, r.textured)


def render_pool(
    n: int,
    seed: int,
    size: int,
    slice_counts: tuple[int, ...],
    blur_range: tuple[float, float] = BLUR_RANGE,
    depth_kinds: tuple[str, ...] = DEPTH_KINDS,
    mix: str = DEFAULT_MIX,
) -> dict[int, list[Example]]:
    """``n`` training stacks of the ``mix`` (:data:`.mix.MIXES`), by slice count."""
    rng = np.random.default_rng(seed)
    pool: dict[int, list[Example]] = {}
    for _ in range(n):
        stack = random_stack(
            rng,
            (size, size),
            images=TRAIN_IMAGES,
            slice_counts=slice_counts,
            blur_range=blur_range,
            depth_kinds=depth_kinds,
            mix=mix,
        )
        add_to_pool(pool, to_example(stack))
    return pool


def real_pool(n: int, seed: int, size: int) -> dict[int, list[Example]]:
    """Stacks composed from the tuning part of the real defocus series (:mod:`.defocus`), half
    from each: real optics (phase halos, reflections, a real PSF) that no renderer matches. The
    benchmarks report on the series' other part only."""
    from .defocus import SERIES, load_series, random_composite

    rng = np.random.default_rng(seed)
    series = [load_series(name) for name in SERIES]
    pool: dict[int, list[Example]] = {}
    for i in range(n):
        add_to_pool(pool, to_example(random_composite(rng, series[i % len(series)], "tune", size)))
    return pool


def add_to_pool(pool: dict[int, list[Example]], ex: Example) -> None:
    """File an example under its slice count: a batch is drawn from stacks of one count."""
    pool.setdefault(ex.slices.shape[0], []).append(ex)


def validation_stacks(
    size: int = 192, seed: int = VALIDATION_SEED, per_count: int = 2, mix: str = DEFAULT_MIX
) -> list[RenderedStack]:
    """Held-out stacks of 3 to 30 slices, ``per_count`` of each, from validation content only;
    the defaults are the ones training validates on (benchmarks draw more from other seeds)."""
    rng = np.random.default_rng(seed)
    return [
        random_stack(rng, (size, size), n, images=VALIDATION_IMAGES, mix=mix)
        for n in (3, 5, 8, 12, 20, 30)
        for _ in range(per_count)
    ]


def validation_set(size: int = 192, mix: str = DEFAULT_MIX) -> list[Example]:
    return [to_example(r) for r in validation_stacks(size, mix=mix)]


def batch(examples: list[Example], rng: np.random.Generator, device: torch.device) -> tuple:
    """Stack examples with one random rotation/flip and Z reversal each (the labels follow)."""
    out = []
    for ex in examples:
        k, flip, reverse = rng.integers(4), rng.random() < 0.5, rng.random() < 0.5
        arrays = [ex.slices.astype(np.float32), ex.truth, ex.depth, ex.textured]
        arrays = [np.rot90(a, k, axes=(-2, -1)) for a in arrays]
        if flip:
            arrays = [a[..., ::-1] for a in arrays]
        if reverse:
            arrays[0] = arrays[0][::-1]
            arrays[2] = ex.slices.shape[0] - 1 - arrays[2]
        out.append([np.ascontiguousarray(a) for a in arrays])
    return tuple(torch.from_numpy(np.stack(parts)).to(device) for parts in zip(*out, strict=True))


@torch.no_grad()
def draw(
    pool: dict[int, list[Example]], rng: np.random.Generator, args: argparse.Namespace
) -> tuple[int, np.ndarray]:
    """A slice count and the indices of a batch of its stacks, about ``args.voxels`` in all."""
    sizes = sorted(pool)
    n = sizes[rng.integers(len(sizes))]
    per_batch = int(np.clip(args.voxels // (n * args.size**2), 1, 16))
    return n, rng.integers(0, len(pool[n]), per_batch)


def draw_from(
    pools: list[tuple[dict[int, list[Example]], float]],
    rng: np.random.Generator,
    args: argparse.Namespace,
) -> tuple[list[Example], int]:
    """A batch from one of several pools, each drawn with its share (the first takes the
    rest), and the index of the pool it came from."""
    pick, r = 0, rng.random()
    for index, (pool, share) in enumerate(pools[1:], 1):
        if pool and r < share:
            pick = index
            break
        r -= share
    n, chosen = draw(pools[pick][0], rng, args)
    return [pools[pick][0][n][i] for i in chosen], pick


def outputs(model: PDMNet, slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fusion weights and the weights the focus map is read from (B, N, H, W): the same
    without a focus head."""
    logits, focus_logits = model(slices)
    weights = torch.softmax(logits, 1)
    if focus_logits is None:
        return weights, weights
    b, n, h, w = focus_logits.shape
    full = upsample(focus_logits.reshape(b * n, 1, h, w)).reshape(b, n, 2 * h, 2 * w)
    return weights, torch.softmax(full, 1)


@torch.no_grad()
def fused_by(model: PDMNet, slices: torch.Tensor) -> torch.Tensor:
    """The fused image (B, H, W) a frozen network gives: what training holds a network to or
    distils it from."""
    return (torch.softmax(model(slices)[0], 1) * slices).sum(1)


def evaluate(model: PDMNet, examples: list[Example], device: torch.device) -> dict[str, float]:
    model.eval()
    psnr, ssim, mae, run_mae = [], [], [], []
    for ex in examples:
        slices, truth, depth, textured = (
            torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
            for a in (ex.slices.astype(np.float32), ex.truth, ex.depth, ex.textured)
        )
        weights, focus_weights = outputs(model, slices)
        focus = mean_focus(focus_weights)
        _, stats = fusion_loss(weights, slices, truth, depth, textured)
        fused = (weights * slices).sum(1)
        mse = ((fused - truth) ** 2).mean().item()
        psnr.append(10 * math.log10(1 / max(mse, 1e-12)))
        ssim.append(stats["ssim"])
        mae.append(focus_l1(focus, depth, textured).item())
        run_mae.append(focus_l1(run_focus(focus_weights), depth, textured).item())
    model.train()
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "focus_mae": float(np.mean(mae)),
        "run_focus_mae": float(np.mean(run_mae)),  # the focus map as inference reads it
    }


class Log:
    """Running means of the training statistics, printed as JSON lines with validation."""

    def __init__(self, stage: str, steps: int, args: argparse.Namespace, start: float) -> None:
        self.stage, self.steps, self.every, self.start = stage, steps, args.log_every, start
        self.running: dict[str, float] = {}
        self.entries: list[dict] = []

    def step(self, step: int, stats: dict[str, float], validate: Callable[[], dict]) -> None:
        for key, value in stats.items():
            self.running[key] = 0.98 * self.running.get(key, value) + 0.02 * value
        if step % self.every and step != self.steps:
            return
        entry = {"stage": self.stage, "step": step}
        entry["minutes"] = round((time.time() - self.start) / 60, 1)
        entry.update({k: round(v, 4) for k, v in self.running.items()})
        if step % (self.every * 5) == 0 or step == self.steps:
            entry.update({f"val_{k}": round(v, 4) for k, v in validate().items()})
        self.entries.append(entry)
        print(json.dumps(entry), flush=True)
