"""Train PDMNet from scratch on rendered focus stacks and write the shipped weights.

``python -m napari_pdmfuse.training`` reproduces ``weights/pdmnet.pt``: everything is seeded, the
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
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ..model.device import resolve_device
from ..model.losses import focus_l1, fusion_loss
from ..model.pdmnet import (
    DEFAULT_WIDTHS,
    LIGHT_LOGIT_BOUND,
    LIGHT_WIDTHS,
    PDMNet,
    mean_focus_of_logits,
)
from ..model.weights import WEIGHTS_PATH, card_path, load_model, save_weights
from .data import (
    Example,
    Log,
    batch,
    draw_from,
    evaluate,
    fused_by,
    real_pool,
    render_pool,
    validation_set,
)
from .focus import refine_network, train_focus_head
from .mix import MIXES, RECIPE_MIX
from .rendering import (
    BLUR_RANGE,
    SLICE_COUNTS,
)

#: The first design's weights, which the light network is distilled from.
TEACHER_PATH = Path(__file__).with_name("teacher.pt")


def train_network(
    pool: dict[int, list[Example]],
    real: dict[int, list[Example]],
    val: list[Example],
    args: argparse.Namespace,
    device: torch.device,
    start: float,
) -> tuple[PDMNet, dict]:
    """The whole network, for the fusion weights (and the focus head's, when trained jointly)."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    joint = args.joint_focus_weight > 0  # the focus head learns with everything else
    light = args.design == "light"
    model = PDMNet(
        LIGHT_WIDTHS if light else DEFAULT_WIDTHS,
        focus_head="coarse" if joint else None,
        light=light,
        logit_bound=LIGHT_LOGIT_BOUND if light else 0.0,
    ).to(device)
    teacher = load_model(args.teacher).to(device).requires_grad_(False) if args.distill else None
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.05
    )
    log = Log("network", args.steps, args, start)
    for step in range(1, args.steps + 1):
        examples, source = draw_from([(pool, 1.0), (real, args.real_share)], rng, args)
        slices, truth, depth, textured = batch(examples, rng, device)
        logits, focus_logits = model(slices)
        weights = torch.softmax(logits, 1)
        loss, stats = fusion_loss(
            weights, slices, truth, depth, textured, focus_weight=args.focus_weight
        )
        if teacher is not None and source == 0:
            # Distillation on rendered stacks: the first design's fused image, as a guide where
            # truth alone leaves the choice open (textureless areas, near ties between slices).
            # Not on real optics, where the first design is what the new one must beat.
            taught = fused_by(teacher, slices)
            distance = ((weights * slices).sum(1) - taught).abs().mean()
            loss = loss + args.distill * distance
            stats["distill"] = distance.item()
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
        "design": args.design,
        "steps": args.steps,
        "real": args.real,
        "real_share": args.real_share,
        "distill": args.distill,
        "teacher": args.teacher.name if args.distill else None,
        "slice_counts": list(args.slice_counts),
        "blur_range": list(args.blur_range),
        "mix": args.mix,
        "focus_weight": args.focus_weight,
        "joint_focus_weight": args.joint_focus_weight,
        "minutes": round((time.time() - start) / 60, 1),
        "validation": log.entries[-1],
    }
    return model, meta


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    device = resolve_device(args.device)
    start = time.time()
    pool = render_pool(
        args.pool, args.seed, args.size, args.slice_counts, args.blur_range, mix=args.mix
    )
    real = real_pool(args.real, args.seed + 13, args.size) if args.real else {}
    val = validation_set(mix=args.mix)
    print(
        f"rendered {args.pool} training, composed {args.real} real and {len(val)} validation "
        "stacks "
        f"in {time.time() - start:.0f} s",
        flush=True,
    )
    if args.init:
        model = load_model(args.init).to(device)
        network_meta = {"init": str(args.init), **_network_record(args.init)}
    else:
        model, network_meta = train_network(pool, real, val, args, device, start)
    meta = {"widths": list(model.widths), "device": str(device), "network": network_meta}
    if args.refine_steps:
        meta["refine"] = refine_network(model, pool, real, val, args, device, time.time())
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
    parser = argparse.ArgumentParser(prog="python -m napari_pdmfuse.training", description=__doc__)
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
        "--mix",
        choices=sorted(MIXES),
        default=RECIPE_MIX,
        help="the training stacks' optics: v1, the intensity PSFs the first design was "
        "trained on; v2, with wave optics, fluorescence and acquisition faults, the shipped "
        "weights' "
        "(napari_pdmfuse.training.mix; default: %(default)s)",
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
    parser.add_argument(
        "--design",
        choices=("light", "first"),
        default="light",
        help="the network: the light design (a third of the cost, bounded logits) or the first "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--real",
        type=int,
        default=1200,
        help="stacks composed from the tuning part of the real defocus series "
        "(default: %(default)s; 0 for none)",
    )
    parser.add_argument(
        "--real-share",
        type=float,
        default=0.3,
        help="share of batches drawn from the real defocus stacks (default: %(default)s)",
    )
    parser.add_argument(
        "--distill",
        type=float,
        default=0.5,
        help="weight of L1 between the fused image and the teacher's (default: %(default)s; "
        "0 for none)",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=TEACHER_PATH,
        help="weights distilled from (default: the first design's, shipped for training)",
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
