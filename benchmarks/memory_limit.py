"""`pdmfuse fuse` short of memory: under an address-space limit (`ulimit -v`) and under a memory
limit counted like a cgroup's, does a large stack fuse with smaller tiles, or is it refused up
front in one sentence, never stopped halfway with temporary files left?

Each run is a fresh `python -m napari_pdmfuse fuse STACK -o OUT --method M`:

- `ulimit`: the child's RLIMIT_AS set to the limit before it starts, as `ulimit -v` does (the
  kernel then refuses allocations: a MemoryError, or PyTorch's allocator failing);
- `cgroup`: a cgroup's limit counts resident memory, and its kernel kills the process outright
  when it is passed. Making a cgroup needs root and a cgroup hierarchy of one's own, so the
  child is told the limit instead (what it leaves is the limit less its resident memory, as a
  cgroup's memory.max less memory.current), and its peak resident memory is compared with the
  limit: below it, a real cgroup of that size would not have killed it.

Reported per run: the exit status, the tiles, the seconds, the peak resident memory, the last
line on stderr and whether a temporary file was left.

    python benchmarks/memory_limit.py                      # 10 × 3000² uint8, 1 GiB
    python benchmarks/memory_limit.py --limits 1G,1.5G --methods pdmnet --slices 30
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

#: The child for the cgroup mode: the limit, less what it holds resident, is what it has left.
CGROUP_CHILD = """
import sys, psutil
from napari_pdmfuse import sizes
limit = int(sys.argv.pop(1))
sizes.limit_left = lambda: limit - psutil.Process().memory_info().rss
sys.argv[0] = "pdmfuse"
from napari_pdmfuse.entry import launch
launch()
"""


def size(text: str) -> int:
    """Bytes from "1G", "1.5G", "800M"."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].isalpha() else int(text)


def make_stack(folder: Path, slices: int, side: int) -> Path:
    """A rendered focus stack, tiled to ``side`` px, uint8 (deterministic)."""
    from napari_pdmfuse.training import rendering as render

    planes = render.random_stack(np.random.default_rng(0), (512, 512), n_slices=slices).stack
    reps = -(-side // 512)
    data = np.tile(planes, (1, reps, reps))[:, :side, :side]
    path = folder / "stack.tif"
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def run(mode: str, limit: int, method: str, stack: Path, out: Path) -> dict:
    args = ["fuse", str(stack), "-o", str(out / "fused.tif"), "--method", method, "--overwrite"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if mode == "ulimit":
        command = [sys.executable, "-m", "napari_pdmfuse", *args]

        def start() -> None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    else:
        command = [sys.executable, "-c", CGROUP_CHILD, str(limit), *args]
        start = None  # type: ignore[assignment]  # nothing to set: told the limit instead
    began = time.perf_counter()
    child = subprocess.Popen(command, stderr=subprocess.PIPE, env=env, preexec_fn=start)
    assert child.stderr is not None
    text = child.stderr.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(child.pid, 0)  # the child's own peak resident memory
    seconds = time.perf_counter() - began
    totals = re.findall(r"\| *(\d+)/(\d+) \[", text)
    lines = [line for line in re.split(r"[\r\n]", text) if line.startswith("pdmfuse: ")]
    left = [p.name for p in out.iterdir() if ".pdmfuse-tmp-" in p.name]
    return {
        "mode": mode,
        "limit": limit,
        "method": method,
        "exit": os.waitstatus_to_exitcode(status),
        "tiles": int(totals[-1][1]) if totals else None,
        "seconds": seconds,
        "peak_mb": usage.ru_maxrss / 1024,
        "last": (lines[-1] if lines else text.strip()[-200:]).split(" → ")[0],
        "temporary_left": left,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limits", default="1G", help="comma-separated, e.g. 1G,1.5G")
    parser.add_argument("--methods", default="argmax,wavelet,pdmnet")
    parser.add_argument("--modes", default="ulimit,cgroup")
    parser.add_argument("--slices", type=int, default=10)
    parser.add_argument("--size", type=int, default=3000)
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    with tempfile.TemporaryDirectory(prefix="pdmfuse-memory-") as tmp:
        folder = Path(tmp)
        stack = make_stack(folder, args.slices, args.size)
        print(f"stack: {args.slices} × {args.size}² uint8, {stack.stat().st_size / 2**20:.0f} MiB")
        print("| limit | mode | method | exit | tiles | s | peak RSS MiB | temporary left | says |")
        print("|---|---|---|---|---|---|---|---|---|")
        for limit in (size(t) for t in args.limits.split(",")):
            for mode in args.modes.split(","):
                for method in args.methods.split(","):
                    out = folder / f"out-{mode}-{method}-{limit}"
                    out.mkdir()
                    r = run(mode, limit, method, stack, out)
                    print(
                        f"| {limit / 2**30:g} GiB | {mode} | {method} | {r['exit']} | "
                        f"{r['tiles']} | {r['seconds']:.1f} | {r['peak_mb']:.0f} | "
                        f"{len(r['temporary_left'])} | {r['last']} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
