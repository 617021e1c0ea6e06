"""Where PDMNet's time goes on one tile: network, read-out, per scale and per kind of operation.

A tile of random slices is fused as the pipeline fuses it (``PDMNetMethod.fuse_tile``), then its
parts are timed alone: the encoder, the decoder and heads (``half_logits``), and the read-out
(upsampling the logits, the streaming softmax, the focus map). PyTorch's profiler then splits
one tile by operation and by the scale it runs at, and forward hooks count the multiply-adds of
every convolution per input voxel. Seconds are the best of ``--repeats``.

    python benchmarks/profile_pdmnet.py                        # 20 × 880², the 2048² job's tile
    python benchmarks/profile_pdmnet.py --threads 1 --size 640
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import common
import numpy as np
import torch

from napari_pdmfuse.methods import get_method
from napari_pdmfuse.methods.pdmnet import CHUNK, StreamingSoftmax
from napari_pdmfuse.model.cost import multiply_adds_per_voxel
from napari_pdmfuse.model.focus_map import FocusRun
from napari_pdmfuse.model.pdmnet import upsample


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=880, help="tile side with its halo")
    parser.add_argument("--threads", type=int, help="PyTorch threads (default: all cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", help="a weights file (default: the shipped weights)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(common.describe_machine(common.machine()))
    n, size = args.slices, args.size
    print(f"Tile: {n} × {size}², {torch.get_num_threads()} threads, best of {args.repeats}\n")
    method = get_method("pdmnet", device="cpu", weights=args.weights)
    model = method.model
    rng = np.random.default_rng(0)
    lum = rng.random((n, size, size), dtype=np.float32)
    block = lum[..., None].copy()
    x = torch.from_numpy(lum)[:, None]
    with torch.inference_mode():
        feats = model.encode(x, n, CHUNK)
        halves = [model.half_logits([f[i : i + CHUNK] for f in feats]) for i in range(0, n, CHUNK)]

    def encode() -> None:
        model.encode(x, n, CHUNK)

    def decode() -> None:
        for i in range(0, n, CHUNK):
            model.half_logits([f[i : i + CHUNK] for f in feats])

    def fusion() -> None:
        acc = StreamingSoftmax()
        for i, (half, _) in zip(range(0, n, CHUNK), halves, strict=True):
            acc.add(upsample(half)[:, 0], torch.from_numpy(block[i : i + CHUNK]))
        acc.result()

    def focus() -> None:
        run = FocusRun(n)
        for _, focus_half in halves:
            run.add(focus_half[:, 0])
        run.result(size, size)

    def tile() -> None:
        method.fuse_tile(block, lum)

    voxels = n * size * size / 1e6
    with torch.inference_mode():
        tile()
        parts = {
            "encoder": best_of(args.repeats, encode),
            "decoder and heads": best_of(args.repeats, decode),
            "fused image: upsampling, streaming softmax": best_of(args.repeats, fusion),
            "focus map: upsampling, read-out": best_of(args.repeats, focus),
        }
        whole = best_of(args.repeats, tile)
    rows = [
        [k, f"{v:.3f}", f"{v / whole:.0%}", common.fmt(voxels / v, 1)] for k, v in parts.items()
    ]
    rows.append(["tile (fuse_tile)", f"{whole:.3f}", "100%", common.fmt(voxels / whole, 1)])
    print(common.table(["part", "seconds", "of tile", "MP/s"], rows))

    from torch.profiler import ProfilerActivity, profile

    with (
        torch.inference_mode(),
        profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p,
    ):
        tile()
    by_kind: dict[str, float] = defaultdict(float)
    for event in p.key_averages(group_by_input_shape=True):
        name = event.key.removeprefix("aten::")
        shapes = event.input_shapes or []
        if "convolution" in name and shapes and shapes[0]:
            side = size // shapes[0][-1] if shapes[0][-1] else 0
            name = f"conv{len(shapes[0]) - 2}d, input at 1/{side}"
        by_kind[name] += event.self_cpu_time_total
    total = sum(by_kind.values())
    top = sorted(by_kind.items(), key=lambda kv: -kv[1])[:14]
    print()
    print(
        common.table(
            ["operation (self time)", "of tile"], [[k, f"{v / total:.1%}"] for k, v in top]
        )
    )

    counts = multiply_adds_per_voxel(model)
    print()
    rows = [[k, f"{v:.0f}"] for k, v in sorted(counts.items(), key=lambda kv: -kv[1])]
    rows.append(["all", f"{sum(counts.values()):.0f}"])
    print(common.table(["convolutions at scale", "multiply-adds per input voxel"], rows))


if __name__ == "__main__":
    main()
