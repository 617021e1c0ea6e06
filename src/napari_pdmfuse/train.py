"""Train PDMNet from scratch on rendered focus stacks and write the shipped weights.

``python -m napari_pdmfuse.train`` reproduces ``weights/pdmnet.pt``: everything is seeded, the
training stacks are rendered here from scikit-image's bundled images and procedural specimens,
and validation content and seeds are disjoint from training. Runs on a GPU when there is one.

Training has two stages. The first trains the whole network on the fusion loss with a light
focus term. The second gives the focus map a head of its own (a second 1 × 1 read of the
half-resolution features) and trains it with the whole network on L1 of the focus map as
inference reads it (the run around the best slice), on the pool plus stacks whose depth is
terraces at whole slices, with the fused image held to the first stage's; a quarter of its
batches come from deep stacks sampled finely in z, where the sub-slice read matters most.

Two heavier focus heads, which also read the quarter-resolution features, are built in to
experiment with: one trained with the whole network from the start (``--joint-focus-weight``),
or one trained afterwards on the frozen network (``--focus-steps``, from existing weights with
``--init``), which reads the frozen decoder's features, computed once per training stack, and
so costs minutes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .model.focus_map import run_focus
from .model.losses import focus_l1, fusion_loss
from .model.pdmnet import (
    DEFAULT_WIDTHS,
    FocusHead,
    PDMNet,
    mean_focus,
    mean_focus_of_logits,
    upsample,
)
from .model.weights import WEIGHTS_PATH, card_path, load_model, save_weights
from .render import (
    BLUR_RANGE,
    DEPTH_KINDS,
    SLICE_COUNTS,
    TRAIN_IMAGES,
    VALIDATION_IMAGES,
    RenderedStack,
    random_stack,
)
from .stack import as_stack, normalisation

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
) -> dict[int, list[Example]]:
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
        )
        ex = to_example(stack)
        pool.setdefault(ex.slices.shape[0], []).append(ex)
    return pool


def validation_stacks(
    size: int = 192, seed: int = VALIDATION_SEED, per_count: int = 2
) -> list[RenderedStack]:
    """Held-out stacks of 3 to 30 slices, ``per_count`` of each, from validation content only;
    the defaults are the ones training validates on (benchmarks draw more from other seeds)."""
    rng = np.random.default_rng(seed)
    return [
        random_stack(rng, (size, size), n, images=VALIDATION_IMAGES)
        for n in (3, 5, 8, 12, 20, 30)
        for _ in range(per_count)
    ]


def validation_set(size: int = 192) -> list[Example]:
    return [to_example(r) for r in validation_stacks(size)]


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


def draw(
    pool: dict[int, list[Example]], rng: np.random.Generator, args: argparse.Namespace
) -> tuple[int, np.ndarray]:
    """A slice count and the indices of a batch of its stacks, about ``args.voxels`` in all."""
    sizes = sorted(pool)
    n = sizes[rng.integers(len(sizes))]
    per_batch = int(np.clip(args.voxels // (n * args.size**2), 1, 16))
    return n, rng.integers(0, len(pool[n]), per_batch)


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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


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


def train_network(
    pool: dict[int, list[Example]],
    val: list[Example],
    args: argparse.Namespace,
    device: torch.device,
    start: float,
) -> tuple[PDMNet, dict]:
    """The whole network, for the fusion weights (and the focus head's, when trained jointly)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    joint = args.joint_focus_weight > 0  # the focus head learns with everything else
    model = PDMNet(DEFAULT_WIDTHS, focus_head="coarse" if joint else None).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    log = Log("network", args.steps, args, start)
    for step in range(1, args.steps + 1):
        n, chosen = draw(pool, rng, args)
        slices, truth, depth, textured = batch([pool[n][i] for i in chosen], rng, device)
        logits, focus_logits = model(slices)
        loss, stats = fusion_loss(
            torch.softmax(logits, 1), slices, truth, depth, textured, focus_weight=args.focus_weight
        )
        if joint:
            head_error = focus_l1(mean_focus_of_logits(focus_logits), depth, textured)
            loss = loss + args.joint_focus_weight * head_error
            stats["focus_l1"] = head_error.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.step(step, {"loss": loss.item(), **stats}, lambda: evaluate(model, val, device))
    meta = {
        "seed": args.seed,
        "steps": args.steps,
        "slice_counts": list(args.slice_counts),
        "blur_range": list(args.blur_range),
        "focus_weight": args.focus_weight,
        "joint_focus_weight": args.joint_focus_weight,
        "minutes": round((time.time() - start) / 60, 1),
        "validation": log.entries[-1],
    }
    return model, meta


def refine_network(
    model: PDMNet,
    pool: dict[int, list[Example]],
    val: list[Example],
    args: argparse.Namespace,
    device: torch.device,
    start: float,
) -> dict:
    """The second stage: a focus head of its own, trained with the whole network on L1 of
    the focus map as inference reads it, on the pool plus stacks of terraces at whole slices,
    with the fused image held to the first stage's. A share of the batches (``--deep-share``)
    comes from deep stacks sampled finely in z, which the pool has few of: they teach the head
    the sub-slice read between neighbours that are nearly equally sharp.

    The fusion loss prefers the sharpest slice; sub-slice focus wants weight on its
    neighbours, so one set of weights cannot serve both, and training the shared features
    for the focus map alone costs the fused image up to 0.01 SSIM on deep stacks. Holding the
    fused image (L1 to the first stage's, in normalised units) keeps it within 0.001.
    """
    torch.manual_seed(args.seed + 3)
    rng = np.random.default_rng(args.seed + 3)
    terraces = render_pool(
        args.terraces, args.seed + 1, args.size, args.slice_counts, args.blur_range, ("terraces",)
    )
    pool = {n: pool.get(n, []) + terraces.get(n, []) for n in sorted(set(pool) | set(terraces))}
    deep = render_pool(
        args.deep_stacks, args.seed + 7, args.size, DEEP_SLICE_COUNTS, DEEP_BLUR_RANGE
    )
    deep_rng = np.random.default_rng(args.seed + 11)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    # The head starts as the fusion head's own read, so it only has to learn what to change.
    model.focus_head = FocusHead(model.widths[0], model.widths[1]).to(device)
    model.focus_head.fine.load_state_dict(model.head.state_dict())
    opt = torch.optim.AdamW(model.parameters(), lr=args.refine_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.refine_lr, total_steps=args.refine_steps, pct_start=0.1
    )
    log = Log("refine", args.refine_steps, args, start)
    model.train()
    for step in range(1, args.refine_steps + 1):
        source, source_rng = pool, rng
        if deep and deep_rng.random() < args.deep_share:
            source, source_rng = deep, deep_rng
        n, chosen = draw(source, source_rng, args)
        slices, truth, depth, textured = batch([source[n][i] for i in chosen], rng, device)
        weights, focus_weights = outputs(model, slices)
        with torch.no_grad():
            held = (torch.softmax(teacher(slices)[0], 1) * slices).sum(1)
        loss, stats = fusion_loss(
            weights, slices, truth, depth, textured, focus_weight=args.focus_weight
        )
        focus_error = focus_l1(run_focus(focus_weights), depth, textured)
        drift = ((weights * slices).sum(1) - held).abs().mean()
        loss = loss + args.refine_focus_weight * focus_error + args.refine_hold * drift
        stats.update(focus_l1=focus_error.item(), drift=drift.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        log.step(step, {"loss": loss.item(), **stats}, lambda: evaluate(model, val, device))
    return {
        "steps": args.refine_steps,
        "lr": args.refine_lr,
        "focus_weight": args.refine_focus_weight,
        "hold": args.refine_hold,
        "terraces": args.terraces,
        "deep_stacks": args.deep_stacks,
        "deep_share": args.deep_share,
        "minutes": round((time.time() - start) / 60, 1),
        "validation": log.entries[-1],
    }


@torch.no_grad()
def decoder_features(model: PDMNet, examples: list[Example], device: torch.device) -> list:
    """What the focus head reads of each stack (the frozen decoder's features at half and
    quarter resolution), float16 on the CPU."""
    model.eval()
    out = []
    for ex in examples:
        x = torch.from_numpy(ex.slices.astype(np.float32))[:, None].to(device)
        out.append(tuple(f.half().cpu() for f in model.decoded(model.encode(x, len(x)))))
    return out


def train_focus_head(
    model: PDMNet,
    pool: dict[int, list[Example]],
    val: list[Example],
    args: argparse.Namespace,
    device: torch.device,
    start: float,
) -> dict:
    """A fresh focus head on the frozen network, L1 of the focus index on textured pixels.

    The head sees one slice's features at a time, so the whole model stays exactly
    equivariant to reversing the stack; the fusion weights are left bit for bit as they were.
    """
    torch.manual_seed(args.seed + 2)
    rng = np.random.default_rng(args.seed + 2)
    model.requires_grad_(False)
    head = PDMNet(model.widths, focus_head="coarse").focus_head
    # Start from the fusion weights' own focus map: the fine read is the fusion head, the
    # coarse correction starts at zero, so the head only has to learn what to change.
    head.fine.load_state_dict(model.head.state_dict())
    nn.init.zeros_(head.coarse[-1].weight)
    nn.init.zeros_(head.coarse[-1].bias)
    model.focus_head = head = head.to(device)
    features = {n: decoder_features(model, pool[n], device) for n in sorted(pool)}
    opt = torch.optim.AdamW(head.parameters(), lr=args.focus_lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.focus_lr, total_steps=args.focus_steps, pct_start=0.05
    )
    log = Log("focus head", args.focus_steps, args, start)
    head.train()
    for step in range(1, args.focus_steps + 1):
        n, chosen = draw(pool, rng, args)
        f, quarter = (
            torch.cat([features[n][i][scale] for i in chosen]).to(device, torch.float32)
            for scale in (0, 1)
        )
        depth, textured = (
            torch.from_numpy(np.stack([getattr(pool[n][i], key) for i in chosen])).to(device)
            for key in ("depth", "textured")
        )
        logits = head(f, quarter)
        focus = mean_focus_of_logits(logits.reshape(len(chosen), n, *logits.shape[-2:]))
        loss = focus_l1(focus, depth, textured)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        log.step(step, {"focus_l1": loss.item()}, lambda: evaluate(model, val, device))
    model.requires_grad_(True)
    return {
        "steps": args.focus_steps,
        "minutes": round((time.time() - start) / 60, 1),
        "validation": log.entries[-1],
    }


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = pick_device(args.device)
    start = time.time()
    pool = render_pool(args.pool, args.seed, args.size, args.slice_counts, args.blur_range)
    val = validation_set()
    print(
        f"rendered {args.pool} training and {len(val)} validation stacks "
        f"in {time.time() - start:.0f} s",
        flush=True,
    )
    if args.init:
        model = load_model(args.init).to(device)
        network_meta = {"init": str(args.init), **_network_record(args.init)}
    else:
        model, network_meta = train_network(pool, val, args, device, start)
    meta = {"widths": list(model.widths), "device": str(device), "network": network_meta}
    if args.refine_steps:
        meta["refine"] = refine_network(model, pool, val, args, device, time.time())
    if args.focus_steps:
        meta["focus_head"] = train_focus_head(model, pool, val, args, device, time.time())
    meta["training_minutes"] = round((time.time() - start) / 60, 1)
    last = meta.get("focus_head") or meta.get("refine") or network_meta
    meta["validation"] = last.get("validation")
    save_weights(model.cpu(), args.out, meta)
    return meta


def _network_record(path: Path) -> dict:
    """What the card beside ``path`` says of its network training (empty if there is no card)."""
    card = card_path(path)
    if not card.is_file():
        return {}
    record = json.loads(card.read_text())
    return record.get("network") or {k: v for k, v in record.items() if k != "sha256"}


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
        "--blur-range",
        type=lambda text: tuple(float(v) for v in text.split(",")),
        default=BLUR_RANGE,
        help="range of the training stacks' blur per slice in px, before the (1 + 4/N) short "
        "stacks get, comma-separated (default: %(default)s)",
    )
    parser.add_argument(
        "--focus-weight",
        type=float,
        default=0.05,
        help="weight of the focus-index loss (default: %(default)s)",
    )
    parser.add_argument(
        "--joint-focus-weight",
        type=float,
        default=0.0,
        help="train a focus head with the whole network, its L1 loss weighted by this "
        "(default: %(default)s, none)",
    )
    parser.add_argument(
        "--focus-steps",
        type=int,
        default=0,
        help="then train a focus head on the frozen network for this many steps "
        "(default: %(default)s, none)",
    )
    parser.add_argument(
        "--focus-lr",
        type=float,
        default=3e-3,
        help="peak learning rate of the focus head (default: %(default)s)",
    )
    parser.add_argument(
        "--refine-steps",
        type=int,
        default=2000,
        help="steps of the second stage, which refines the network for the focus map "
        "(default: %(default)s; 0 skips it)",
    )
    parser.add_argument(
        "--refine-lr",
        type=float,
        default=3e-4,
        help="peak learning rate of the second stage (default: %(default)s)",
    )
    parser.add_argument(
        "--refine-focus-weight",
        type=float,
        default=0.1,
        help="weight of the second stage's L1 focus loss (default: %(default)s)",
    )
    parser.add_argument(
        "--refine-hold",
        type=float,
        default=1.0,
        help="weight of the second stage's L1 between its fused image and the first "
        "stage's (default: %(default)s)",
    )
    parser.add_argument(
        "--terraces",
        type=int,
        default=800,
        help="stacks of terraces at whole slices the second stage adds to the pool "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--deep-stacks",
        type=int,
        default=240,
        help="deep stacks sampled finely in z the second stage renders (default: %(default)s)",
    )
    parser.add_argument(
        "--deep-share",
        type=float,
        default=0.25,
        help="share of the second stage's batches drawn from the deep stacks "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--init",
        type=Path,
        help="skip the first stage: start from these weights (a file this command wrote) and "
        "run the second stage and/or a focus head's (--refine-steps, --focus-steps)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    parser.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH, help="weights file to write")
    args = parser.parse_args(argv)
    if args.init and not (args.refine_steps or args.focus_steps):
        parser.error("--init skips the first stage: give --refine-steps or --focus-steps")
    if args.focus_steps and args.refine_steps:
        parser.error(
            "--focus-steps adds a focus head to the first stage's network: give --refine-steps 0"
        )
    if args.joint_focus_weight and args.refine_steps:
        parser.error(
            "--joint-focus-weight trains a focus head, which the second stage would replace: "
            "give --refine-steps 0"
        )
    if args.init and args.joint_focus_weight:
        parser.error("--joint-focus-weight trains the whole network, which --init skips")
    if args.focus_steps and args.joint_focus_weight:
        parser.error("--focus-steps would replace the focus head --joint-focus-weight trains")
    if (args.joint_focus_weight or args.focus_steps) and args.out == WEIGHTS_PATH:
        parser.error("weights with a coarse focus head are not the shipped ones: give --out")
    train(args)


if __name__ == "__main__":
    main()
