"""Chaos on a cluster: `pdmfuse batch --scheduler` over many stacks while workers are killed
(SIGKILL) and restarted at random, and the scheduler once, all on 127.0.0.1.

Every stack must end either with outputs equal to a local run's (the same options, on this
machine, without a cluster) or reported failed in one sentence; nothing half-written, no
temporary file. Reported: the kills, and per stack whether it matched, failed (with the
sentence) or differed.

    nice -n 15 python benchmarks/chaos.py                   # 100 stacks, 3 workers
    python benchmarks/chaos.py --stacks 20 --workers 2 --seed 3
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

#: The fusion every stack gets, locally and on the cluster: many small tiles, so that kills land
#: in the middle of stacks.
OPTIONS = ["--method", "argmax", "--tile", "64", "--focus-map"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Cluster:
    """A scheduler and workers as processes of their own, killed and restarted on demand."""

    def __init__(self, n_workers: int, folder: Path) -> None:
        self.port, self.folder = free_port(), folder
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.dask = [sys.executable, "-m", "dask"]
        self.scheduler = self._scheduler()
        self.workers = [self._worker(k) for k in range(n_workers)]

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen[bytes]:
        with open(self.folder / log, "ab") as out:
            return subprocess.Popen([*self.dask, *args], stdout=out, stderr=out)

    def _scheduler(self) -> subprocess.Popen[bytes]:
        args = ["scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"]
        return self._spawn(args, "scheduler.log")

    def _worker(self, k: int) -> subprocess.Popen[bytes]:
        args = ["worker", self.address, "--nthreads", "1", "--host", "127.0.0.1",
                "--no-dashboard", "--death-timeout", "120"]  # fmt: skip
        return self._spawn(args, f"worker{k}.log")

    def kill_worker(self, k: int) -> None:
        self.workers[k].send_signal(signal.SIGKILL)
        self.workers[k].wait()

    def start_worker(self, k: int) -> None:
        self.workers[k] = self._worker(k)

    def kill_scheduler(self) -> None:
        self.scheduler.send_signal(signal.SIGKILL)
        self.scheduler.wait()

    def start_scheduler(self) -> None:
        self.scheduler = self._scheduler()

    def close(self) -> None:
        for process in [*self.workers, self.scheduler]:
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()


def chaos(cluster: Cluster, stop: threading.Event, rng: random.Random, log: list[str],
          scheduler_at: float) -> None:  # fmt: skip
    """Kill a random worker every 2 to 6 s and restart it a second later; kill the scheduler
    once, ``scheduler_at`` seconds in, and restart it 3 s later."""
    began = time.monotonic()
    scheduler_killed = False
    while not stop.wait(rng.uniform(2, 6)):
        if not scheduler_killed and time.monotonic() - began >= scheduler_at:
            cluster.kill_scheduler()
            log.append(f"{time.monotonic() - began:.0f} s: scheduler killed")
            time.sleep(3)
            cluster.start_scheduler()
            scheduler_killed = True
            continue
        k = rng.randrange(len(cluster.workers))
        cluster.kill_worker(k)
        log.append(f"{time.monotonic() - began:.0f} s: worker {k} killed")
        time.sleep(1)
        cluster.start_worker(k)


def same(a: Path, b: Path) -> bool:
    return np.array_equal(tifffile.imread(a), tifffile.imread(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stacks", type=int, default=100)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scheduler-at", type=float, default=60.0, help="seconds in")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()), flush=True)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="pdmfuse-chaos-") as tmp:
        folder = Path(tmp)
        stacks = folder / "stacks"
        stacks.mkdir()
        names = []
        for k in range(args.stacks):
            names.append(str(stacks / f"s{k:03d}.tif"))
            data = rng.integers(0, 255, (3, 256, 256), dtype=np.uint8)
            tifffile.imwrite(names[-1], data, photometric="minisblack")
        command = [sys.executable, "-m", "napari_pdmfuse", "batch", *names, *OPTIONS, "-q"]
        began = time.perf_counter()
        subprocess.run([*command, "--out-dir", str(folder / "local")], check=True)
        print(f"local run: {time.perf_counter() - began:.0f} s", flush=True)
        cluster = Cluster(args.workers, folder)
        kills: list[str] = []
        stop = threading.Event()
        killer = threading.Thread(
            target=chaos, args=(cluster, stop, random.Random(args.seed), kills, args.scheduler_at)
        )
        env = {**os.environ, "PDMFUSE_NO_WORKER_TIMEOUT": "30"}
        try:
            time.sleep(10)  # the scheduler and workers start
            killer.start()
            began = time.perf_counter()
            done = subprocess.run(
                [*command, "--out-dir", str(folder / "cluster"), "--scheduler", cluster.address],
                capture_output=True, text=True, env=env, check=False,
            )  # fmt: skip
            seconds = time.perf_counter() - began
        finally:
            stop.set()
            if killer.is_alive():
                killer.join()
            cluster.close()
        report(folder, names, done, seconds, kills)


def report(folder: Path, names: list[str], done: subprocess.CompletedProcess[str],
           seconds: float, kills: list[str]) -> None:  # fmt: skip
    local, remote = folder / "local", folder / "cluster"
    left = (
        [p.name for p in remote.iterdir() if ".pdmfuse-tmp-" in p.name] if remote.is_dir() else []
    )
    matched, failed, differed = 0, [], []
    for name in names:
        stem = Path(name).stem
        outputs = [f"{stem}_fused.tif", f"{stem}_focus.tif"]
        present = [(remote / o).exists() for o in outputs]
        if not any(present):
            failed.append(stem)
        elif all(present) and all(same(local / o, remote / o) for o in outputs):
            matched += 1
        else:
            differed.append(stem)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("pdmfuse: error: ")]
    other = [line for line in lines if not line.startswith("pdmfuse: ")]
    print(f"cluster run: {seconds:.0f} s, exit {done.returncode}; {len(kills)} kills:")
    for kill in kills:
        print(f"  {kill}")
    print(f"{len(names)} stacks: {matched} equal to the local run, {len(failed)} failed, "
          f"{len(differed)} different or half-written; {len(left)} temporary files "
          "left")  # fmt: skip
    print(f"{len(errors)} error lines, {len(other)} other lines on stderr")
    for line in sorted(set(errors))[:10]:
        print(f"  {line}")
    for line in other[:10]:
        print(f"  other: {line}")


if __name__ == "__main__":
    main()
