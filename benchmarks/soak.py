"""A day of batch work in one process: `pdmfuse batch` over many small stacks, then large ones,
while a thread samples the process's resident memory, open file descriptors and threads.

The batch runs in this process (``napari_pdmfuse.cli.main``, as the command runs it), a tenth
of the stacks at a time into a fresh folder (removed afterwards, so the disk stays small), and
after each tenth the process is sampled. Inputs are hard links of one small and one large stack
(each a separate path to the batch). Reported: resident memory, descriptors and threads after
each tenth, their growth after warm-up, and any temporary file (``.pdmfuse-tmp-``) left in the
output folders or in $TMPDIR.

    nice -n 15 python benchmarks/soak.py                     # 1000 × 3 × 64², 50 × 10 × 2048²
    python benchmarks/soak.py --small 200 --large 10 --method wavelet
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common


class Sampler(threading.Thread):
    """Samples (seconds, RSS MiB, open descriptors, threads) every ``every`` seconds."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.samples = every, []
        self.process = psutil.Process()
        self.stop = threading.Event()
        self.began = time.perf_counter()

    def sample(self) -> tuple[float, float, int, int]:
        p = self.process
        return (time.perf_counter() - self.began, p.memory_info().rss / 2**20, p.num_fds(),
                p.num_threads())  # fmt: skip

    def run(self) -> None:
        while not self.stop.wait(self.every):
            self.samples.append(self.sample())


def inputs(folder: Path, name: str, data: np.ndarray, count: int) -> list[str]:
    """``count`` hard links of one stack, each its own input path to the batch."""
    first = folder / f"{name}0000.tif"
    tifffile.imwrite(first, data, photometric="minisblack")
    paths = [first]
    for k in range(1, count):
        paths.append(folder / f"{name}{k:04d}.tif")
        os.link(first, paths[-1])
    return [str(p) for p in paths]


def batch(paths: list[str], out: Path, method: str) -> int:
    """``pdmfuse batch PATHS --out-dir OUT --focus-map`` in this process."""
    from napari_pdmfuse.cli import main

    with contextlib.redirect_stderr(io.StringIO()):
        return main(["batch", *paths, "--out-dir", str(out), "--method", method, "--focus-map",
                     "--quiet"])  # fmt: skip


def phase(name: str, paths: list[str], folder: Path, method: str, sampler: Sampler) -> None:
    """The stacks in batches of a tenth each; prints the samples and the growth."""
    import shutil

    rows = []
    tenth = max(1, len(paths) // 10)
    for start in range(0, len(paths), tenth):
        out = folder / f"out-{name}-{start}"
        code = batch(paths[start : start + tenth], out, method)
        rows.append((start + tenth, *sampler.sample()[1:], code, len(temporaries(out))))
        shutil.rmtree(out)
    print(f"\n{name}: {len(paths)} stacks, method {method}")
    report(rows, ["stacks done", "exit", "temporary left"])


def temporaries(folder: Path) -> list[str]:
    """Temporary files (``.pdmfuse-tmp-``) in ``folder`` and below, relative to it."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.pdmfuse-tmp-*"))


def report(rows: list[tuple], names: list[str]) -> None:
    """A table of samples, one row per tenth: (done, RSS MiB, fds, threads, *others), the
    columns ``names[0]``, RSS, fds, threads, ``names[1:]``; then the growth after warm-up (from
    the sample after the first tenth to the last) and the trend of RSS."""
    header = [names[0], "RSS MiB", "open fds", "threads", *names[1:]]
    print("| " + " | ".join(header) + " |\n" + "|---" * len(header) + "|")
    for done, rss, fds, threads, *others in rows:
        print("| " + " | ".join(map(str, [done, f"{rss:.0f}", fds, threads, *others])) + " |")
    warm, last = rows[0], rows[-1]  # the first tenth warms up: caches, model, pools
    growth = 100 * (last[1] - warm[1]) / warm[1]
    print(f"after warm-up: RSS {warm[1]:.0f} → {last[1]:.0f} MiB ({growth:+.1f} %), "
          f"fds {warm[2]} → {last[2]}, threads {warm[3]} → {last[3]}")  # fmt: skip
    if len(rows) > 2:  # where RSS wanders from sample to sample, its trend tells growth
        done, rss = np.array([r[0] for r in rows], float), np.array([r[1] for r in rows])
        slope, start = np.polyfit(done, rss, 1)
        rise = slope * (done[-1] - done[0])
        print(f"trend (least squares): {rise:+.0f} MiB over the run "
              f"({100 * rise / (start + slope * done[0]):+.1f} %)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=50)
    parser.add_argument("--large-side", type=int, default=2048)
    parser.add_argument("--method", default="argmax")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    rng = np.random.default_rng(0)
    before = set(os.listdir(tempfile.gettempdir()))
    sampler = Sampler()
    sampler.start()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pdmfuse-soak-") as tmp:
        folder = Path(tmp)
        small = inputs(folder, "s", rng.integers(0, 255, (3, 64, 64), dtype=np.uint8), args.small)
        side = args.large_side
        large = inputs(folder, "l", rng.integers(0, 255, (10, side, side), dtype=np.uint8),
                       args.large)  # fmt: skip
        phase("small", small, folder, args.method, sampler)
        phase("large", large, folder, args.method, sampler)
    sampler.stop.set()
    new = set(os.listdir(tempfile.gettempdir())) - before
    stray = sorted(n for n in new if ".pdmfuse-tmp-" in n)
    peak = max(s[1] for s in sampler.samples) if sampler.samples else float("nan")
    print(f"\n{time.perf_counter() - began:.0f} s in all; peak RSS sampled {peak:.0f} MiB; "
          f"temporary files left in {tempfile.gettempdir()}: {stray or 'none'}")  # fmt: skip


if __name__ == "__main__":
    main()
