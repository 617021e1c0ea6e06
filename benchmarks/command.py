"""``pdmfuse fuse`` end to end against enfuse, on the same stack in the same run.

What a user waits for: the installed command from a TIFF on disk to the fused image and focus
map on disk, start-up included, beside enfuse (contrast weight, hard mask) on the same planes.
Commands run in turn, round-robin, so a slow spell of the machine hits all of them; seconds
are the median of ``--repeats`` rounds after a warm-up round, peak RSS the largest seen.

    python benchmarks/command.py                     # 20 × 2048² uint16, and 3 × 256² start-up
    python benchmarks/command.py --isa avx2          # as on a CPU without AVX-512
    python benchmarks/command.py --sizes 20x2048 --methods pdmnet --repeats 5

``--isa avx2`` caps PyTorch's kernels and oneDNN at AVX2 (``ATEN_CPU_CAPABILITY``,
``ONEDNN_MAX_CPU_ISA``), which is how an AVX-512 machine stands in for an AVX2-only one;
enfuse is not affected, so the ratio is the one such a machine would see.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from statistics import median

import common
import numpy as np
import tifffile
from speed import stack_path

ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def prepared(slices: int, size: int) -> tuple[Path, list[str]]:
    """The stack as one ImageJ TIFF (ours) and as one TIFF per plane (enfuse), cached."""
    folder = common.CACHE / f"command-{slices}x{size}"
    stack_file = folder / "stack.tif"
    planes = [str(folder / f"plane{k:03d}.tif") for k in range(slices)]
    if not stack_file.is_file():
        stack = (
            np.load(stack_path(slices, size))
            if size >= 512
            else (np.random.default_rng(0).random((slices, size, size)) * 60000).astype(np.uint16)
        )
        folder.mkdir(parents=True, exist_ok=True)
        for plane, path in zip(stack, planes, strict=True):
            tifffile.imwrite(path, plane)
        tifffile.imwrite(folder / "partial.tif", stack, imagej=True, metadata={"axes": "ZYX"})
        (folder / "partial.tif").rename(stack_file)
    return stack_file, planes


def commands(stack: Path, planes: list[str], methods: list[str], out: Path, extra: dict) -> dict:
    pdmfuse = shutil.which("pdmfuse", path=str(Path(sys.executable).parent)) or "pdmfuse"
    runs = {}
    for method in [*methods, *extra]:
        if method == "enfuse":
            if shutil.which("enfuse"):
                runs[method] = common.enfuse_command(planes, out / "enfuse.tif")
            continue
        base, weights = extra.get(method, (method, None))
        name, options = common.VARIANTS.get(base, (base, {}))
        options = {**options, "weights": weights} if weights else options
        flags = [f"--{key.replace('_', '-')}" for key, value in options.items() if value is True]
        flags += [f"--{k.replace('_', '-')}={v}" for k, v in options.items() if v is not True]
        runs[method] = [
            pdmfuse, "fuse", str(stack), "-o", str(out / f"{method}.tif"),
            "--focus-map", str(out / f"{method}-focus.tif"), "--method", name, *flags,
            "--quiet", "--overwrite",
        ]  # fmt: skip
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20x2048,3x256", help="stacks as SLICESxSIDE, ...")
    parser.add_argument(
        "--methods", default="enfuse,pdmnet,wavelet", help="enfuse, ours, or their variants"
    )
    parser.add_argument(
        "--weights", help="PDMNet weights files as extra commands, NAME=PATH,... (pdmnet@label)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--isa", choices=sorted(ISA_CAPS), help="cap our vector instructions")
    args = parser.parse_args()
    os.environ.update(ISA_CAPS.get(args.isa, {}))
    extra = common.parse_weights(args.weights)
    print(common.describe_machine(common.machine()))
    for tool in common.tool_versions().values():
        print(f"Tool: {tool}")
    if args.isa:
        print(f"PyTorch and oneDNN capped at {args.isa.upper()} for our commands")
    print(f"Seconds: median of {args.repeats} round-robin rounds after a warm-up round\n")
    rows = []
    for size_spec in args.sizes.split(","):
        slices, side = (int(v) for v in size_spec.split("x"))
        stack, planes = prepared(slices, side)
        megapixels = slices * side * side / 1e6
        out = common.CACHE / "command-out"
        out.mkdir(parents=True, exist_ok=True)
        runs = commands(stack, planes, args.methods.split(","), out, extra)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        rss: dict[str, float] = dict.fromkeys(runs, 0.0)
        for round_ in range(args.repeats + 1):
            for name, cmd in runs.items():
                proc, elapsed, peak = common.spawn(cmd)
                if proc.returncode:
                    sys.exit(f"{name} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
                if round_:  # the first round warms the disk cache and the imports
                    seconds[name].append(elapsed)
                rss[name] = max(rss[name], peak)
        reference = median(seconds["enfuse"]) if "enfuse" in seconds else None
        for name, times in seconds.items():
            mid = median(times)
            ratio = common.fmt(reference / mid, 2) if reference else "–"
            spread = f"{min(times):.2f}–{max(times):.2f}"
            rate, memory = common.fmt(megapixels / mid, 1), common.fmt(rss[name], 0)
            rows.append([f"{slices} × {side}²", name, f"{mid:.2f}", spread, rate, ratio, memory])
    headers = ["stack", "command", "seconds", "range", "MP/s", "speed vs enfuse", "peak RSS MB"]
    print(common.table(headers, rows))


if __name__ == "__main__":
    main()
