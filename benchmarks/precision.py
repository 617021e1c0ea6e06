"""PDMNet in bf16 against float32: how far the fused image and focus map move, and the speed.

Runs the light design's network (``--weights``, default the shipped ones) in both precisions on
rendered validation stacks and on stacks composed from the real defocus series, tile by tile as
the pipeline does, and prints the largest change of the fused image (in units of the stack's
data range), of the focus map (in slices), and the time of a 20 × 880² tile in each precision,
alternating. bf16 is used by default only where it moves the fused image by ≤ 1e-3 of the data
range and is faster (``methods.pdmnet.network_precision``).

    python benchmarks/precision.py
    python benchmarks/precision.py --weights runs/light.pt --repeats 5
"""

from __future__ import annotations

import argparse
import time

import common
import numpy as np
import torch

from napari_pdmfuse.methods.pdmnet import PDMNetMethod
from napari_pdmfuse.stack import as_stack, normalisation
from napari_pdmfuse.training.data import validation_stacks
from napari_pdmfuse.training.defocus import SERIES, load_series, random_composite


def stacks() -> list[tuple[str, np.ndarray]]:
    rendered = [(f"rendered {len(r.stack)} planes", r.stack) for r in validation_stacks(256)]
    rng = np.random.default_rng(5)
    real = [
        (
            f"{name.split('-')[0]} composite",
            random_composite(rng, load_series(name), "report", 256).stack,
        )
        for name in SERIES
        for _ in range(3)
    ]
    return rendered + real


def fused(method: PDMNetMethod, stack: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = as_stack(stack)
    data = np.asarray(s.data, dtype=np.float32)
    block = data if data.ndim == 4 else data[..., None]
    result = method.fuse_tile(block, normalisation(s).luminance(block))
    return result.fused, result.focus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", help="a weights file (default: the shipped weights)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    print(f"bf16 natively: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}\n")
    methods = {}
    for precision in ("float32", "bfloat16"):
        methods[precision] = PDMNetMethod(device="cpu", weights=args.weights)
        methods[precision].precision = precision
    rows, worst = [], 0.0
    for name, stack in stacks():
        (a, fa), (b, fb) = (fused(methods[p], stack) for p in ("float32", "bfloat16"))
        span = float(np.ptp(stack)) or 1.0
        moved = float(np.abs(a - b).max()) / span
        worst = max(worst, moved)
        rows.append([name, f"{moved:.2e}", f"{float(np.abs(fa - fb).max()):.3f}"])
    print(common.table(["stack", "fused: max change / range", "focus: max change"], rows))
    print(f"\nlargest change of the fused image: {worst:.2e} of the data range")

    rng = np.random.default_rng(0)
    lum = rng.random((20, 880, 880), dtype=np.float32)
    block = lum[..., None].copy()
    times: dict[str, list[float]] = {p: [] for p in methods}
    for method in methods.values():
        method.fuse_tile(block, lum)
    for _ in range(args.repeats):
        for p, method in methods.items():
            start = time.perf_counter()
            method.fuse_tile(block, lum)
            times[p].append(time.perf_counter() - start)
    best = {p: min(t) for p, t in times.items()}
    print(
        f"20 × 880² tile, best of {args.repeats}: float32 {best['float32']:.3f} s, "
        f"bf16 {best['bfloat16']:.3f} s ({best['float32'] / best['bfloat16']:.2f}× faster)"
    )


if __name__ == "__main__":
    main()
