"""Stacks larger than memory: time, throughput and peak RSS of ``pdmfuse fuse`` by stack size.

Creates (once, cached under benchmarks/.cache/) tiled BigTIFF stacks of 30 uint16 slices of
2048², 4096² and 8192² px (the largest is 4 GB), made by tiling a rendered 512² stack, then
fuses each through the command line — lazy reading, tiles with halos, streaming output — and
prints seconds, megapixels of input per second and the peak RSS of the whole ``pdmfuse``
process. Run from the repository root:

    python benchmarks/scale.py                          # all sizes, pdmnet and wavelet
    python benchmarks/scale.py --sizes 2048 --methods wavelet
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import common
import numpy as np
import tifffile

from napari_pdmfuse import render

TILE = 256  # px of the TIFF tiles the stacks are stored in


def stack_path(slices: int, size: int) -> Path:
    """The cached stack, written tile by tile so creating it never needs it in memory."""
    path = common.CACHE / f"scale-{slices}x{size}x{size}-uint16.tif"
    if path.is_file():
        return path
    print(f"Writing the {slices} × {size} × {size} uint16 BigTIFF once, into {path}", flush=True)
    rng = np.random.default_rng(40000)
    sharp = render.fluorescence(rng, (512, 512))
    depth = render.depth_map(rng, (512, 512), slices)
    small = render.render_stack(sharp, depth, slices, rng=rng, photons=1000, bits=16).stack

    def tiles():
        for z in range(slices):
            for y in range(0, size, TILE):
                for x in range(0, size, TILE):
                    flip = (y // 512 + x // 512) % 2  # vary the repeats a little
                    block = small[z, y % 512 : y % 512 + TILE, x % 512 : x % 512 + TILE]
                    yield block[::-1] if flip else block

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.tif")
    tifffile.imwrite(
        partial, tiles(), shape=(slices, size, size), dtype=np.uint16, tile=(TILE, TILE),
        bigtiff=True, metadata={"axes": "ZYX"},
    )  # fmt: skip
    partial.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,4096,8192", help="plane sides in px")
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--methods", default="pdmnet,wavelet")
    parser.add_argument("--out", type=Path, help="write the measurements to this JSON file")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdmfuse-scale-") as tmp:
        for size in map(int, args.sizes.split(",")):
            path = stack_path(args.slices, size)
            voxels = args.slices * size * size
            for method in args.methods.split(","):
                fused, focus = Path(tmp) / "fused.tif", Path(tmp) / "focus.tif"
                exe = shutil.which("pdmfuse") or "pdmfuse"
                cmd = [exe, "fuse", str(path), "-o", str(fused), "--focus-map", str(focus)]
                proc, seconds, rss_mb = common.spawn([*cmd, "--method", method, "--quiet"])
                if proc.returncode:
                    print(f"{method} {size}: failed: {proc.stderr.strip()[-300:]}")
                    continue
                rows.append(
                    {"size": size, "method": method, "seconds": seconds,
                     "mp_per_s": voxels / seconds / 1e6, "ns_per_voxel": seconds / voxels * 1e9,
                     "rss_mb": rss_mb}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                fused.unlink()
                focus.unlink()
    head = ("method", "stack", "seconds", "MP/s", "ns/voxel", "RSS MB")
    print("\n{:8s} {:>16s} {:>8s} {:>6s} {:>9s} {:>7s}".format(*head))
    for r in rows:
        shape = f"{args.slices}×{r['size']}²"
        print(
            f"{r['method']:8s} {shape:>16s} {r['seconds']:8.1f} {r['mp_per_s']:6.1f} "
            f"{r['ns_per_voxel']:9.1f} {r['rss_mb']:7.0f}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
