"""Stacks larger than memory: time, throughput and peak RSS of ``pdmfuse fuse`` by stack size.

Creates (once, cached under benchmarks/.cache/) tiled BigTIFF stacks of 30 uint16 slices of
2048², 4096² and 8192² px (the largest is 4 GB), made by tiling a rendered 512² stack, then
fuses each through the command line — lazy reading, tiles with halos, streaming output — and
prints seconds, megapixels of input per second and the peak RSS of the whole ``pdmfuse``
process. Run from the repository root:

    python benchmarks/scale.py                          # all sizes, pdmnet and wavelet
    python benchmarks/scale.py --sizes 2048 --methods wavelet
    python benchmarks/scale.py --local-cluster          # through --scheduler, 2 workers
    python benchmarks/scale.py --two-channels           # 2-channel OME-TIFF to both OME formats

Each run's output is also compared, on a central 512² crop, with the in-memory result there.
``--two-channels`` fuses a 2-channel 12 × 8192² uint16 ZCYX OME-TIFF (3.2 GB, 256² zlib tiles)
and a plain 24 × 8192² stack of the same voxels, stored alike, to ``.ome.zarr`` and
``.ome.tif``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import common
import numpy as np
import tifffile

from napari_pdmfuse.training import rendering as render

TILE = 256  # px of the TIFF tiles the stacks are stored in


def stack_path(slices: int, size: int, *, channels: int = 1, zlib: bool = False) -> Path:
    """The cached stack, written tile by tile so creating it never needs it in memory: a plain
    (Z, Y, X) BigTIFF, or with ``zlib`` a compressed OME-TIFF, (Z, C, Y, X) for ``channels`` >
    1, whose second channel is the first mirrored and dimmed, so that they differ."""
    kind = f"{slices}x{channels}x{size}x{size}" if channels > 1 else f"{slices}x{size}x{size}"
    path = common.CACHE / f"scale-{kind}-uint16{'-zlib.ome' if zlib else ''}.tif"
    if path.is_file():
        return path
    print(f"Writing {path.name} once, tile by tile", flush=True)
    rng = np.random.default_rng(40000)
    sharp = render.fluorescence(rng, (512, 512))
    depth = render.depth_map(rng, (512, 512), slices)
    small = render.render_stack(sharp, depth, slices, rng=rng, photons=1000, bits=16).stack

    def tiles():
        for z in range(slices):
            for c in range(channels):
                for y in range(0, size, TILE):
                    for x in range(0, size, TILE):
                        flip = (y // 512 + x // 512 + c) % 2  # vary the repeats a little
                        block = small[z, y % 512 : y % 512 + TILE, x % 512 : x % 512 + TILE]
                        block = block[::-1] if flip else block
                        yield block if c == 0 else block[:, ::-1] // 2

    shape = (slices, channels, size, size) if channels > 1 else (slices, size, size)
    meta: dict = {"axes": "ZCYX" if channels > 1 else "ZYX"}
    options: dict = {}
    if zlib:
        meta.update(PhysicalSizeX=0.2, PhysicalSizeY=0.2)
        options = {"compression": "zlib", "ome": True}
    if channels > 1:
        meta["Channel"] = {"Name": [f"ch{c}" for c in range(channels)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name("partial-" + path.name)
    tifffile.imwrite(
        partial, tiles(), shape=shape, dtype=np.uint16, tile=(TILE, TILE), bigtiff=True,
        metadata=meta, **options,
    )  # fmt: skip
    partial.rename(path)
    return path


def crop_difference(stack: Path, fused: Path, method: str, side: int = 512) -> float:
    """Largest difference, as a fraction of the data range, between the command's output and
    the in-memory result on a central crop: the first part's tile read with the method's full
    halo and normalised exactly as the command plans it, against the output's (channels
    first) crop."""
    import zarr

    from napari_pdmfuse import FuseOptions
    from napari_pdmfuse.executing import TileFuser
    from napari_pdmfuse.planning import plan_job
    from napari_pdmfuse.reading import open_image
    from napari_pdmfuse.stack import to_dtype
    from napari_pdmfuse.tiling import Tile

    job = plan_job(open_image([stack]), FuseOptions(method=method))
    plan = job.plan(job.parts[0])
    height, width = plan.stack.shape_yx
    halo = plan.method.halo
    y0, x0 = (height - side) // 2 // 16 * 16, (width - side) // 2 // 16 * 16
    tile = Tile(
        read=(slice(y0 - halo, y0 + side + halo), slice(x0 - halo, x0 + side + halo)),
        write=(slice(y0, y0 + side), slice(x0, x0 + side)),
        crop=(slice(halo, halo + side), slice(halo, halo + side)),
    )
    result = TileFuser(plan.stack.data, plan.norm, plan.method, plan.window)(tile)
    memory = np.moveaxis(to_dtype(result.fused, plan.stack.dtype), -1, 0).astype(np.float64)
    if fused.name.endswith(".zarr"):
        written = zarr.open_group(str(fused), mode="r")["0"][(..., *tile.write)]
    else:
        with tifffile.TiffFile(fused) as tif:
            written = tif.series[0].levels[0].asarray()[(..., *tile.write)]
    written = np.asarray(written, dtype=np.float64).reshape(memory.shape)
    span = float(np.max(plan.norm.high - plan.norm.low))
    return float(np.abs(written - memory).max() / span)


def two_channel_rows(methods: list[str], tmp: Path) -> list[dict]:
    """The 2-channel stack and a plain stack of the same voxels, to both OME formats."""
    rows = []
    stacks = {"2 × 12 × 8192² ZCYX": stack_path(12, 8192, channels=2, zlib=True),
              "24 × 8192² ZYX": stack_path(24, 8192, zlib=True)}  # fmt: skip
    voxels = 24 * 8192 * 8192
    exe = shutil.which("pdmfuse") or "pdmfuse"
    for method in methods:
        for label, path in stacks.items():
            for suffix in (".ome.zarr", ".ome.tif"):
                fused = tmp / f"fused{suffix}"
                cmd = [exe, "fuse", str(path), "-o", str(fused), "--method", method, "--quiet"]
                proc, seconds, rss_mb = common.spawn(cmd)
                if proc.returncode:
                    print(f"{method} {label} {suffix}: failed: {proc.stderr.strip()[-300:]}")
                    continue
                rows.append(
                    {"stack": label, "output": suffix, "method": method, "seconds": seconds,
                     "mp_per_s": voxels / seconds / 1e6, "rss_mb": rss_mb,
                     "crop_difference": crop_difference(path, fused, method)}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                shutil.rmtree(fused) if fused.is_dir() else fused.unlink()
    print(f"\n{'method':8s} {'stack':>20s} {'output':>9s} {'seconds':>8s} {'MP/s':>6s} "
          f"{'RSS MB':>7s} {'crop diff':>9s}")  # fmt: skip
    for r in rows:
        print(
            f"{r['method']:8s} {r['stack']:>20s} {r['output']:>9s} {r['seconds']:8.1f} "
            f"{r['mp_per_s']:6.1f} {r['rss_mb']:7.0f} {r['crop_difference']:9.1e}"
        )
    return rows


IN_MEMORY = """import sys, time, tifffile
from napari_pdmfuse import fuse
stack = tifffile.imread(sys.argv[1])
start = time.perf_counter()
result = fuse(stack, method=sys.argv[2])
print(time.perf_counter() - start)
tifffile.imwrite(sys.argv[3], result.fused)
tifffile.imwrite(sys.argv[4], result.focus_map)
"""


def in_memory_seconds(path: Path, method: str, tmp: Path) -> tuple[float, float]:
    """Seconds of the same job done in memory through the Python API, in a fresh process: the
    whole script (start-up, reading the stack, ``fuse()``, writing both results) and the
    ``fuse()`` call alone."""
    out = [str(tmp / "memory-fused.tif"), str(tmp / "memory-focus.tif")]
    proc, seconds, _ = common.spawn([sys.executable, "-c", IN_MEMORY, str(path), method, *out])
    if proc.returncode:
        raise RuntimeError(proc.stderr.strip()[-300:])
    return seconds, float(proc.stdout.split()[-1])


class LocalWorkers:
    """A two-process dask LocalCluster (one thread each) that ``--scheduler`` runs go to;
    restarted before each run so that every worker's peak RSS belongs to that run alone."""

    def __init__(self) -> None:
        from dask.distributed import Client, LocalCluster

        self.cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
        self.client = Client(self.cluster)
        self.address = self.cluster.scheduler_address

    def restart(self) -> None:
        self.client.restart()

    def peak_rss_mb(self) -> float:
        import resource

        def peak() -> float:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        return max(self.client.run(peak).values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2048,4096,8192", help="plane sides in px")
    parser.add_argument("--slices", type=int, default=30)
    parser.add_argument("--methods", default="pdmnet,wavelet")
    parser.add_argument(
        "--local-cluster", action="store_true",
        help="run through --scheduler on a 2-worker LocalCluster; report each worker's peak RSS",
    )  # fmt: skip
    parser.add_argument(
        "--in-memory-max", type=int, default=2048,
        help="also time the job in memory up to this size (default: %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--two-channels", action="store_true",
        help="fuse the 2-channel 12 × 8192² OME-TIFF and a plain stack of the same voxels to "
        ".ome.zarr and .ome.tif instead",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, help="write the measurements to this JSON file")
    args = parser.parse_args()
    print(common.describe_machine(common.machine()))
    if args.two_channels:
        with tempfile.TemporaryDirectory(prefix="pdmfuse-scale-") as tmp:
            rows = two_channel_rows(args.methods.split(","), Path(tmp))
        if args.out:
            args.out.write_text(json.dumps(rows, indent=2) + "\n")
        return
    workers = LocalWorkers() if args.local_cluster else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="pdmfuse-scale-") as tmp:
        for size in map(int, args.sizes.split(",")):
            path = stack_path(args.slices, size)
            voxels = args.slices * size * size
            for method in args.methods.split(","):
                fused, focus = Path(tmp) / "fused.tif", Path(tmp) / "focus.tif"
                exe = shutil.which("pdmfuse") or "pdmfuse"
                cmd = [exe, "fuse", str(path), "-o", str(fused), "--focus-map", str(focus)]
                cmd += ["--method", method, "--quiet"]
                if workers is not None:
                    workers.restart()
                    cmd += ["--scheduler", workers.address]
                proc, seconds, rss_mb = common.spawn(cmd)
                if proc.returncode:
                    print(f"{method} {size}: failed: {proc.stderr.strip()[-300:]}")
                    continue
                rows.append(
                    {"size": size, "method": method, "seconds": seconds,
                     "mp_per_s": voxels / seconds / 1e6, "ns_per_voxel": seconds / voxels * 1e9,
                     "rss_mb": rss_mb,
                     "worker_rss_mb": workers.peak_rss_mb() if workers else None,
                     "crop_difference": crop_difference(path, fused, method)}
                )  # fmt: skip
                if size <= args.in_memory_max:
                    script, call = in_memory_seconds(path, method, Path(tmp))
                    rows[-1]["in_memory_script_mp_per_s"] = voxels / script / 1e6
                    rows[-1]["in_memory_fuse_mp_per_s"] = voxels / call / 1e6
                print(json.dumps(rows[-1]), flush=True)
                fused.unlink()
                focus.unlink()
    head = ("method", "stack", "seconds", "MP/s", "in-memory MP/s", "ns/voxel", "RSS MB",
            "worker MB", "crop diff")  # fmt: skip
    print("\n{:8s} {:>12s} {:>8s} {:>6s} {:>15s} {:>9s} {:>7s} {:>9s} {:>9s}".format(*head))
    print(f"{'':44s}(script / fuse())")
    for r in rows:
        shape = f"{args.slices}×{r['size']}²"
        worker = f"{r['worker_rss_mb']:9.0f}" if r["worker_rss_mb"] else f"{'-':>9s}"
        script, call = r.get("in_memory_script_mp_per_s"), r.get("in_memory_fuse_mp_per_s")
        memory = f"{script:.1f} / {call:.1f}" if script else "-"
        print(
            f"{r['method']:8s} {shape:>12s} {r['seconds']:8.1f} {r['mp_per_s']:6.1f} "
            f"{memory:>15s} {r['ns_per_voxel']:9.1f} {r['rss_mb']:7.0f} {worker} "
            f"{r['crop_difference']:9.1e}"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
