"""PDMNet's focus map: the second training stage and the frozen-network focus head.

The second stage gives the focus map a head of its own and trains it with the whole network
on L1 of the focus map as inference reads it (see :mod:`.recipe`); the frozen-network head is
an experiment that reads the decoder's features, computed once per training stack.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch
from torch import nn

from ..model.focus_map import run_focus
from ..model.losses import focus_l1, fusion_loss
from ..model.pdmnet import FocusHead, PDMNet, mean_focus_of_logits
from .data import (
    DEEP_BLUR_RANGE,
    DEEP_SLICE_COUNTS,
    Example,
    Log,
    batch,
    draw,
    draw_from,
    evaluate,
    fused_by,
    outputs,
    render_pool,
)


def refine_network(
    model: PDMNet,
    pool: dict[int, list[Example]],
    real: dict[int, list[Example]],
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
        args.terraces,
        args.seed + 1,
        args.size,
        args.slice_counts,
        args.blur_range,
        ("terraces",),
        mix=args.mix,
    )
    pool = {n: pool.get(n, []) + terraces.get(n, []) for n in sorted(set(pool) | set(terraces))}
    deep = render_pool(
        args.deep_stacks, args.seed + 7, args.size, DEEP_SLICE_COUNTS, DEEP_BLUR_RANGE, mix=args.mix
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
        if deep and deep_rng.random() < args.deep_share:
            n, chosen = draw(deep, deep_rng, args)
            examples = [deep[n][i] for i in chosen]
        else:
            examples, _ = draw_from([(pool, 1.0), (real, args.real_share)], rng, args)
        slices, truth, depth, textured = batch(examples, rng, device)
        weights, focus_weights = outputs(model, slices)
        held = fused_by(teacher, slices)
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
