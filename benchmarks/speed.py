"""Fusion speed and memory on a large rendered uint16 stack, per method and device.

Each method runs in a fresh Python process, so its peak RSS (``ru_maxrss``) is its own: that of
the process for our methods (Python, napari_pdmfuse, the stack in memory and the fusion), that of
the tool's process for enfuse and OpenFocus. Seconds are the median of ``--repeats`` runs after
one warm-up, and MP/s counts input voxels (Z·Y·X) per second. The stack is rendered once and
cached under benchmarks/.cache/.

    python benchmarks/speed.py                 # 20 × 2048 × 2048
    python benchmarks/speed.py --quick         # 5 × 512 × 512, to check that it works
    python benchmarks/speed.py --size 1024 --slices 10 --methods wavelet,pdmnet
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path
from statistics import median

import common
import numpy as np


def stack_path(slices: int, size: int) -> Path:
    """The cached benchmark stack, rendered on first use."""
    path = common.CACHE / f"speed-{slices}x{size}x{size}-uint16.npy"
    if not path.is_file():
        from napari_pdmfuse.training import rendering as render

        print(f"Rendering the {slices} × {size} × {size} uint16 stack once, into {path}")
        rng = np.random.default_rng(30000)
        # Larger than 2048² the renderer's float64 noise would need more than 14 GB: render
        # 2048² and repeat it.
        side = min(size, 2048)
        sharp = render.fluorescence(rng, (side, side))
        depth = render.depth_map(rng, (side, side), slices)
        stack = render.render_stack(
            sharp, depth, slices, rng=rng, photons=1000, bits=16, levels_per_slice=2
        ).stack
        reps = -(-size // side)
        stack = np.tile(stack, (1, reps, reps))[:, :size, :size]
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, stack)
        partial.rename(path)
    return path


def worker(method: str, device: str, path: str, repeats: int) -> dict:
    """Runs in the fresh process: time ``method`` on the stack, report seconds and peak memory."""
    stack = np.load(path)
    if method == "baseline":
        import napari_pdmfuse  # noqa: F401  (what every run of ours pays for)

        return {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        common.check_available(method, device)
        runs = [common.run_method(method, stack, device) for _ in range(repeats + 1)]
    except common.Skip as why:
        return {"skip": str(why)}
    result = {"seconds": median(r.seconds for r in runs[1:]), "runs": [r.seconds for r in runs]}
    if method in common.EXTERNAL:  # the tool's process, not this one holding the stack
        result["rss_mb"] = max(r.rss_mb for r in runs)
    else:
        result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB
    if device == "cuda":
        import torch

        result["gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def measure(method: str, device: str, path: Path, repeats: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--device", device, "--stack", str(path)]
    proc = common.spawn([*cmd, "--repeats", str(repeats)])[0]  # so ru_maxrss is the worker's
    if proc.returncode:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"skip": f"worker failed with exit code {proc.returncode}: {tail[0]}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, help="side of the stack in pixels (default 2048)")
    parser.add_argument("--slices", type=int, help="number of planes (default 20)")
    parser.add_argument("--quick", action="store_true", help="5 × 512 × 512, to check it works")
    parser.add_argument("--methods", help=f"comma-separated, from: {', '.join(common.METHODS)}")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after the warm-up")
    parser.add_argument("--out", type=Path, help="write the measurements to this JSON file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--stack", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.device, args.stack, args.repeats)))
        return

    size = args.size or (512 if args.quick else 2048)
    slices = args.slices or (5 if args.quick else 20)
    methods = args.methods.split(",") if args.methods else list(common.METHODS)
    if unknown := [m for m in methods if m not in common.METHODS]:
        parser.error(f"unknown method: {', '.join(unknown)}")
    info = common.machine()
    print(common.describe_machine(info))
    for tool in common.tool_versions().values():
        print(f"Tool: {tool}")
    path = stack_path(slices, size)
    megapixels = slices * size * size / 1e6
    print(f"Stack: {slices} × {size} × {size} uint16 ({megapixels:.1f} MP), {path}")
    print(f"Seconds: median of {args.repeats} runs after a warm-up, each method in a fresh process")

    report = {"machine": info, "stack": [slices, size, size], "results": []}
    rows = []
    for method in methods:
        devices = ["cpu", "cuda"] if method == "pdmnet" and info["cuda"] else ["cpu"]
        for device in devices:
            result = {
                "method": method,
                "device": device,
                **measure(method, device, path, args.repeats),
            }
            report["results"].append(result)
            if "skip" in result:
                print(f"Skipping {method} on {device}: {result['skip']}")
                continue
            seconds = result["seconds"]
            gpu = common.fmt(result.get("gpu_mb"), 0) if info["cuda"] else None
            cells = [method, device, common.fmt(seconds, 2), common.fmt(megapixels / seconds, 1)]
            rows.append([*cells, common.fmt(result["rss_mb"], 0), *([gpu] if gpu else [])])
    print()
    headers = ["method", "device", "seconds", "MP/s", "peak RSS MB"]
    print(common.table(headers + (["peak GPU MB"] if info["cuda"] else []), rows))
    baseline = measure("baseline", "cpu", path, 0)
    report["baseline_rss_mb"] = baseline["rss_mb"]
    print(
        f"(baseline: Python + napari_pdmfuse + the stack in memory = {baseline['rss_mb']:.0f} MB)"
    )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
