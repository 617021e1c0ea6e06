"""Fuse a rendered 15-slice 640×640 uint16 stack with ``pdmfuse fuse`` and score each output.

This is the user's path end to end — TIFF in, TIFFs out, through the installed command — so it
checks the CLI, the reader and the writer as well as the methods. Run from the repository root:

    python benchmarks/cli_roundtrip.py
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_pdmfuse.training.rendering import demo_stack

METHODS = ("pdmnet", "wavelet", "pyramid", "argmax")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=15)
    parser.add_argument("--size", type=int, default=640)
    args = parser.parse_args()
    r = demo_stack(args.slices, args.size, seed=7)
    truth = r.truth.astype(np.float64)
    span = float(truth.max() - truth.min())
    print(f"stack {r.stack.shape} {r.stack.dtype}; truth range {span:.0f}")
    print(f"{'method':10s} {'PSNR dB':>8s} {'SSIM':>6s} {'focus MAE':>9s} {'seconds':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        stack_path = Path(tmp) / "stack.tif"
        tifffile.imwrite(stack_path, r.stack, imagej=True, metadata={"axes": "ZYX"})
        for method in METHODS:
            fused, focus = Path(tmp) / f"{method}.tif", Path(tmp) / f"{method}_focus.tif"
            cmd = ["pdmfuse", "fuse", str(stack_path), "-o", str(fused), "--focus-map", str(focus)]
            start = time.perf_counter()
            subprocess.run([*cmd, "--method", method, "--quiet"], check=True)
            seconds = time.perf_counter() - start
            image = tifffile.imread(fused).astype(np.float64)
            assert tifffile.imread(fused).dtype == r.stack.dtype
            error = np.abs(tifffile.imread(focus) - r.depth)[r.textured].mean()
            psnr = peak_signal_noise_ratio(truth, image, data_range=span)
            ssim = structural_similarity(truth, image, data_range=span)
            print(f"{method:10s} {psnr:8.2f} {ssim:6.3f} {error:9.3f} {seconds:8.2f}")


if __name__ == "__main__":
    main()
