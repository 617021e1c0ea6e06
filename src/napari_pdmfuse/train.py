"""Train PDMNet from scratch on rendered focus stacks and write the shipped weights.

``python -m napari_pdmfuse.train`` reproduces ``weights/pdmnet.pt``: everything is seeded, the
training stacks are rendered here from scikit-image's bundled images and procedural specimens,
and validation content and seeds are disjoint from training. Runs on a GPU when there is one.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .model.losses import fusion_loss
from .model.pdmnet import DEFAULT_WIDTHS, PDMNet, weights_to_outputs
from .model.weights import WEIGHTS_PATH, save_weights
from .render import SLICE_COUNTS, TRAIN_IMAGES, VALIDATION_IMAGES, RenderedStack, random_stack
from .stack import as_stack, normalisation

VALIDATION_SEED = 10_000


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
    n: int, seed: int, size: int, slice_counts: tuple[int, ...]
) -> dict[int, list[Example]]:
    rng = np.random.default_rng(seed)
    pool: dict[int, list[Example]] = {}
    for _ in range(n):
        ex = to_example(
            random_stack(rng, (size, size), images=TRAIN_IMAGES, slice_counts=slice_counts)
        )
        pool.setdefault(ex.slices.shape[0], []).append(ex)
    return pool


def validation_set(size: int = 192) -> list[Example]:
    rng = np.random.default_rng(VALIDATION_SEED)
    return [
        to_example(random_stack(rng, (size, size), n, images=VALIDATION_IMAGES))
        for n in (3, 5, 8, 12, 20, 30)
        for _ in range(2)
    ]


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
def evaluate(model: PDMNet, examples: list[Example], device: torch.device) -> dict[str, float]:
    model.eval()
    psnr, ssim, mae = [], [], []
    for ex in examples:
        slices, truth, depth, textured = (
            torch.from_numpy(np.ascontiguousarray(a))[None].to(device)
            for a in (ex.slices.astype(np.float32), ex.truth, ex.depth, ex.textured)
        )
        weights = torch.softmax(model(slices), 1)
        _, stats = fusion_loss(weights, slices, truth, depth, textured)
        fused = (weights * slices).sum(1)
        mse = ((fused - truth) ** 2).mean().item()
        psnr.append(10 * math.log10(1 / max(mse, 1e-12)))
        ssim.append(stats["ssim"])
        focus, _ = weights_to_outputs(weights)
        mae.append((focus - depth).abs()[textured].mean().item())
    model.train()
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "focus_mae": float(np.mean(mae)),
    }


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def train(args: argparse.Namespace) -> dict:
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = pick_device(args.device)
    start = time.time()
    pool = render_pool(args.pool, args.seed, args.size, args.slice_counts)
    val = validation_set()
    print(
        f"rendered {args.pool} training and {len(val)} validation stacks "
        f"in {time.time() - start:.0f} s",
        flush=True,
    )
    model = PDMNet(DEFAULT_WIDTHS).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    sizes = sorted(pool)
    log: list[dict] = []
    running: dict[str, float] = {}
    for step in range(1, args.steps + 1):
        n = sizes[rng.integers(len(sizes))]
        per_batch = int(np.clip(args.voxels // (n * args.size**2), 1, 16))
        chosen = [pool[n][i] for i in rng.integers(0, len(pool[n]), per_batch)]
        slices, truth, depth, textured = batch(chosen, rng, device)
        weights = torch.softmax(model(slices), 1)
        loss, stats = fusion_loss(
            weights, slices, truth, depth, textured, focus_weight=args.focus_weight
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        for key, value in {"loss": loss.item(), **stats}.items():
            running[key] = 0.98 * running.get(key, value) + 0.02 * value
        if step % args.log_every == 0 or step == args.steps:
            entry = {"step": step, "minutes": round((time.time() - start) / 60, 1)}
            entry.update({k: round(v, 4) for k, v in running.items()})
            if step % (args.log_every * 5) == 0 or step == args.steps:
                entry.update(
                    {f"val_{k}": round(v, 4) for k, v in evaluate(model, val, device).items()}
                )
            log.append(entry)
            print(json.dumps(entry), flush=True)
    meta = {
        "widths": list(DEFAULT_WIDTHS),
        "seed": args.seed,
        "steps": args.steps,
        "slice_counts": list(args.slice_counts),
        "focus_weight": args.focus_weight,
        "training_minutes": round((time.time() - start) / 60, 1),
        "device": str(device),
        "validation": log[-1],
    }
    save_weights(model.cpu(), args.out, meta)
    return meta


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m napari_pdmfuse.train", description=__doc__)
    parser.add_argument(
        "--steps", type=int, default=14000, help="optimiser steps (default: %(default)s)"
    )
    parser.add_argument(
        "--pool", type=int, default=4000, help="rendered training stacks (default: %(default)s)"
    )
    parser.add_argument(
        "--size", type=int, default=160, help="training crop size in px (default: %(default)s)"
    )
    parser.add_argument("--voxels", type=int, default=32 * 128 * 128, help="input voxels per batch")
    parser.add_argument(
        "--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)"
    )
    parser.add_argument(
        "--slice-counts",
        type=lambda text: tuple(int(v) for v in text.split(",")),
        default=SLICE_COUNTS,
        help="slice counts the training stacks are drawn from, comma-separated",
    )
    parser.add_argument(
        "--focus-weight",
        type=float,
        default=0.05,
        help="weight of the focus-index loss (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="weights file to write")
    train(parser.parse_args(argv))


if __name__ == "__main__":
    main()
