"""The focus map between slices on stacks with coarse z steps: the read-out before (the mean over
the run of slices around the best one) against the one shipped (the vertex of the logits, the
run's mean where the run is broad), and how the vertex's dead zone trades the two kinds of
surface against each other.

Smooth surfaces (domes, smooth and tilted ones) and flat terraces at whole slices, 6 to 16
planes, 3 to 6 px of blur per slice of defocus (so the planes next to the sharpest are much
blurrier), gaussian, disk and airy PSFs, validation content only, 192 × 192 px. Scored on
textured pixels: focus MAE (slices; mean and median over the stacks), on terraces the same away
from their steps (4 px and more), and the fraction of pixels read within 0.05 of a whole slice
(on a smooth surface a staircase raises it well above the truth's).

    python benchmarks/subslice.py
    python benchmarks/subslice.py --per-count 2 --dead-zones 0,0.05,0.1
"""

from __future__ import annotations

import argparse
from typing import ClassVar

import common
import numpy as np
import torch
from scipy import ndimage

from napari_pdmfuse import fuse
from napari_pdmfuse.methods import pdmnet
from napari_pdmfuse.model import focus_map
from napari_pdmfuse.model.pdmnet import upsample
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.training.rendering import VALIDATION_IMAGES, RenderedStack

SLICE_COUNTS = (6, 8, 12, 16)
PSFS = ("gaussian", "disk", "airy")
SIZE = 192


def dome(rng: np.random.Generator, n: int) -> np.ndarray:
    """A paraboloid cap over part of the field, in slices."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE - rng.uniform(0.3, 0.7, (2, 1, 1))
    height = 1 - (yy**2 + xx**2) / rng.uniform(0.2, 0.5) ** 2
    low, top = sorted(rng.uniform(0, n - 1, 2))
    return (low + (top - low) * height.clip(0, 1)).astype(np.float32)


def stacks(kind: str, seed: int, per_count: int) -> list[RenderedStack]:
    """``per_count`` stacks per slice count: for ``smooth`` a dome, a smooth and a tilted
    surface in turn, for ``terraces`` flat terraces at whole slices."""
    rng = np.random.default_rng(seed)
    out = []
    for n in SLICE_COUNTS:
        for j in range(per_count):
            sharp = render.content(rng, (SIZE, SIZE), VALIDATION_IMAGES, False)
            if kind == "terraces":
                depth = render.depth_map(rng, (SIZE, SIZE), n, kinds=("terraces",))
            elif j % 3 == 0:
                depth = dome(rng, n)
            else:
                depth = render.depth_map(rng, (SIZE, SIZE), n, kinds=(("smooth", "tilted")[j % 2],))
            optics = {"psf_kind": PSFS[j % 3], "blur_per_slice": float(rng.uniform(3, 6))}
            out.append(render.render_stack(sharp, depth, n, rng=rng, **optics))
    return out


class Recording(focus_map.FocusRun):
    """FocusRun that keeps the half-resolution logits it is fed, to read them other ways."""

    kept: ClassVar[list[torch.Tensor]] = []

    def add(self, half: torch.Tensor) -> None:
        if self.start == 0:
            Recording.kept.clear()
        Recording.kept.append(half.clone())
        super().add(half)


def full_size(focus: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A focus map read at the logits' half resolution, upsampled as inference does."""
    return upsample(focus[None, None])[0, 0, : shape[0], : shape[1]].numpy()


def run_mean(logits: torch.Tensor) -> torch.Tensor:
    """The read-out before: the mean slice position over the run around the best slice."""
    return focus_map.run_mean(torch.exp(logits - logits.amax(0))[None])[0][0]


def near_integer(focus: np.ndarray, r: RenderedStack) -> float:
    """The fraction of textured pixels read within 0.05 of a whole slice."""
    return float(np.mean(np.abs(focus - np.round(focus))[r.textured] < 0.05))


def scores(focus: np.ndarray, r: RenderedStack) -> tuple[float, float, float]:
    """(focus MAE, the same 4 px and more from a step (NaN without one), fraction within 0.05
    of a slice)."""
    flat = r.textured & (ndimage.maximum_filter(r.depth, 9) == ndimage.minimum_filter(r.depth, 9))
    error = np.abs(focus - r.depth)
    off_steps = error[flat].mean() if flat.any() else np.nan
    return error[r.textured].mean(), off_steps, near_integer(focus, r)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-count", type=int, default=6, help="stacks per slice count")
    parser.add_argument("--dead-zones", default="0,0.05,0.1", help="others to compare")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    shipped = focus_map.DEAD_ZONE
    zones = [float(z) for z in args.dead_zones.split(",")]
    pdmnet.FocusRun = Recording
    rows = []
    for kind, seed in (("smooth", 31000), ("terraces", 32000)):
        cases = [r for r in stacks(kind, seed, args.per_count) if r.textured.any()]
        table: dict[str, list] = {}
        for r in cases:
            result = fuse(r.stack, method="pdmnet")
            logits = torch.cat(Recording.kept)
            weights = torch.softmax(logits[None], 1)
            # the whole-stack read-out training scores is the one inference streams
            shape = result.focus_map.shape
            read = full_size(focus_map.run_focus(weights)[0], shape)
            assert np.abs(read - result.focus_map).max() < 1e-4
            table.setdefault("before: run mean", []).append(
                scores(full_size(run_mean(logits), shape), r)
            )
            table.setdefault(f"shipped (dead zone {shipped:g})", []).append(
                scores(result.focus_map, r)
            )
            for zone in zones:
                focus_map.DEAD_ZONE = zone
                focus = full_size(focus_map.run_focus(weights)[0], shape)
                focus_map.DEAD_ZONE = shipped
                table.setdefault(f"dead zone {zone:g}", []).append(scores(focus, r))
        truth = np.mean([near_integer(r.depth, r) for r in cases])
        for name, values in table.items():
            v = np.array(values)
            rows.append(
                [
                    f"{kind} ({len(cases)})",
                    name,
                    f"{v[:, 0].mean():.4f}",
                    f"{np.median(v[:, 0]):.4f}",
                    common.fmt(float(np.nanmean(v[:, 1])), 4) if kind == "terraces" else "",
                    f"{v[:, 2].mean():.2f} ({truth:.2f})",
                ]
            )
    headers = ["surface", "read-out", "MAE", "median", "MAE off steps", "within 0.05 (truth)"]
    print(common.table(headers, rows))


if __name__ == "__main__":
    main()
