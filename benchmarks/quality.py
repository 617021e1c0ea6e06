"""Fusion quality on fixed validation stacks: rendered ones with ground truth, and real ones.

Rendered cases use only content never trained on
(napari_pdmfuse.training.rendering.VALIDATION_IMAGES and procedural specimens seeded from 20000
up) and span the renderer's range of PSFs, noise, bit depths, slice counts and surfaces; three
more use optics no training stack had (occlusion at depth steps, aberrated PSFs, brightfield
halos). They are scored by PSNR and SSIM against the
sharp truth, focus MAE (slices, textured pixels) and Q^AB/F. The real stacks in ../shared/data
have no truth and get Q^AB/F only. Seconds are wall time of the fusion: fuse() in this process
for our methods, the tool's command line (start-up, reading planes, fusing, writing, OpenFocus'
focus map) for others.

    python benchmarks/quality.py                # every case, every method
    python benchmarks/quality.py --quick        # two small cases, to check that it works
    python benchmarks/quality.py --cases ihc-steps,real-diatom --methods wavelet,enfuse
    python benchmarks/quality.py --out results.json
    python benchmarks/quality.py --seeds 3      # each rendered case from 3 seeds (name, name@1, …)
    python benchmarks/quality.py --methods pdmnet --weights runs/head/pdmnet.pt   # other weights
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import common
import metrics
import numpy as np
from scipy import ndimage

from napari_pdmfuse.reading import open_image
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.training.optics import Brightfield, Fluorescence, z_step_for_blur

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
QUICK = {"cases": ("bf-rgb-disk", "real-diatom"), "size": 128}
SEED_STEP = 1000  # seed offset between the renderings of one case (--seeds)


@dataclass
class Case:
    description: str
    stack: np.ndarray  # (Z, Y, X[, 3])
    truth: np.ndarray | None = None  # (Y, X[, 3]) data units
    depth: np.ndarray | None = None  # (Y, X) slices
    textured: np.ndarray | None = None  # (Y, X) bool
    footprint: np.ndarray | None = None  # (Y, X) bool: bright spots in focus, for the ghosts


# ---------------------------------------------------------------------------------------------
# Cases


def crop(name: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size``² crop of a bundled validation image, zoomed up if the image is smaller."""
    img = render.bundled_image(name)
    zoom = max(1.0, size / min(img.shape[:2]))
    if zoom > 1:
        img = ndimage.zoom(img, (zoom, zoom) + (1,) * (img.ndim - 2), order=1)
    y, x = (rng.integers(0, s - size + 1) for s in img.shape[:2])
    return np.clip(img[y : y + size, x : x + size], 0, 1).astype(np.float32)


def tilted(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    return ((ramp - ramp.min()) / np.ptp(ramp) * (n - 1)).astype(np.float32)


def steps(size: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Flat terraces at whole slices: discs of random depth on a flat base."""
    depth = np.full((size, size), float(rng.integers(n)))
    yy, xx = np.mgrid[:size, :size]
    for _ in range(4):
        cy, cx = rng.uniform(0, size, 2)
        depth[np.hypot(yy - cy, xx - cx) < rng.uniform(0.15, 0.35) * size] = rng.integers(n)
    return depth.astype(np.float32)


def rendered(description: str, sharp, depth, n: int, rng, footprint=None, **optics) -> Case:
    r = render.render_stack(sharp.astype(np.float32), depth, n, rng=rng, **optics)
    return Case(description, r.stack, r.truth, r.depth, r.textured, footprint)


def fluo_noisy(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20001 + seed)
    sharp = render.fluorescence(rng, (size, size))
    return rendered(
        "fluorescence, N=10, gaussian PSF, 40 photons, 16-bit",
        sharp, render.depth_map(rng, (size, size), 10), 10, rng,
        psf_kind="gaussian", blur_per_slice=2.0, photons=40, read_noise=0.01, bits=16,
    )  # fmt: skip


def bf_rgb_disk(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20002 + seed)
    sharp = render.brightfield(rng, (size, size))
    return rendered(
        "stained brightfield RGB, N=5, disk PSF, 8-bit",
        sharp, render.depth_map(rng, (size, size), 5), 5, rng,
        psf_kind="disk", blur_per_slice=3.0, depth_of_field=0.2, photons=3000, bits=8,
    )  # fmt: skip


def diatom_periodic(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20003 + seed)
    sharp = render.periodic(rng, (size, size))
    return rendered(
        "periodic diatom-like, N=20, airy PSF, 12-bit",
        sharp, render.depth_map(rng, (size, size), 20), 20, rng,
        psf_kind="airy", blur_per_slice=1.2, photons=1000, read_noise=0.003, bits=12,
    )  # fmt: skip


def ihc_steps(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20004 + seed)
    return rendered(
        "immunohistochemistry RGB, N=3, steps, disk PSF, 8-bit",
        crop("immunohistochemistry", size, rng), steps(size, 3, rng), 3, rng,
        psf_kind="disk", blur_per_slice=4.0, photons=3000, bits=8,
    )  # fmt: skip


def coins_tilted_drift(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20005 + seed)
    return rendered(
        "coins, N=30, tilted, gaussian PSF, 3% brightness drift, 16-bit",
        crop("coins", size, rng), tilted(size, 30, rng), 30, rng,
        psf_kind="gaussian", blur_per_slice=0.8, photons=2000, drift=0.03, bits=16,
    )  # fmt: skip


def partly_textureless(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20006 + seed)
    sharp = render.brightfield(rng, (size, size)) @ metrics.LUMA
    keep = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 8) > 0
    keep = ndimage.gaussian_filter(keep.astype(float), 2)
    sharp = keep * sharp + (1 - keep) * sharp.mean()  # about half the field is blank
    return rendered(
        "brightfield grey, half blank, N=8, gaussian PSF, 16-bit",
        sharp, render.depth_map(rng, (size, size), 8), 8, rng,
        psf_kind="gaussian", blur_per_slice=2.0, photons=2000, bits=16,
    )  # fmt: skip


# Optics the first design never saw in training (rendering.py: occlusion, aberrations, halos).


def ihc_occluded_steps(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20007 + seed)
    return rendered(
        "immunohistochemistry RGB, N=3, steps with occlusion, disk PSF, 8-bit",
        crop("immunohistochemistry", size, rng), steps(size, 3, rng), 3, rng,
        psf_kind="disk", blur_per_slice=4.0, photons=3000, bits=8, occlusion=True,
    )  # fmt: skip


def bf_astigmatic_halo(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20008 + seed)
    sharp = render.brightfield(rng, (size, size))
    return rendered(
        "stained brightfield RGB, N=8, astigmatic PSF, halos, 8-bit",
        sharp, render.depth_map(rng, (size, size), 8), 8, rng,
        psf_kind="astigmatic", blur_per_slice=2.0, photons=3000, bits=8, halo=0.6,
    )  # fmt: skip


def fluo_spherical_coarse(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20009 + seed)
    sharp = render.fluorescence(rng, (size, size))
    return rendered(
        "fluorescence, N=6, smooth surface, spherical aberration, coarse z, 16-bit",
        sharp, render.depth_map(rng, (size, size), 6, kinds=("smooth",)), 6, rng,
        psf_kind="spherical", blur_per_slice=4.0, photons=500, read_noise=0.005, bits=16,
    )  # fmt: skip


# Physical optics (training/optics.py): wave-optical brightfield, fluorescence through a
# vectorial PSF with haze, bright puncta on a dark ground at several depths.


def bf_phase_wave(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20010 + seed)
    sharp = 1 - 0.5 * (1 - render.brightfield(rng, (size, size)) @ metrics.LUMA)  # light stain
    na, pixel = 0.4, 0.35
    optics = Brightfield(
        na=na, condenser=0.5, pixel=pixel, z_step=z_step_for_blur(2.5, na, pixel, 1.0)
    )
    return rendered(
        "brightfield grey, phase and light stain, wave optics (NA 0.4, condenser 0.5), N=8, "
        "16-bit",
        sharp, render.depth_map(rng, (size, size), 8), 8, rng, optics=optics,
        relief=render.relief_map(rng, sharp, 0.15), levels_per_slice=2, photons=20000, bits=16,
    )  # fmt: skip


def fluo_psf_haze(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20011 + seed)
    na, pixel = 1.2, 0.13
    optics = Fluorescence(
        na=na, immersion=1.33, sample=1.45, depth=15, pixel=pixel,
        z_step=z_step_for_blur(2.0, na, pixel, 1.33, 0.52),
    )  # fmt: skip
    return rendered(
        "fluorescence, vectorial PSF (NA 1.2 water into 1.45, 15 µm deep), haze, bleaching, "
        "N=10, 16-bit",
        render.fluorescence(rng, (size, size)), render.depth_map(rng, (size, size), 10), 10, rng,
        optics=optics, levels_per_slice=2, photons=300, read_noise=0.005, bleaching=0.01, bits=16,
    )  # fmt: skip


def puncta_depths(size: int, seed: int = 0) -> Case:
    rng = np.random.default_rng(20012 + seed)
    na, pixel, wave = 0.8, 0.2, 0.52
    sharp = np.zeros((size, size))
    count = size**2 // 900
    ys, xs = rng.integers(4, size - 4, (2, count))
    sharp[ys, xs] = rng.uniform(0.3, 1, count)
    sharp = ndimage.gaussian_filter(sharp, 0.8)
    sharp /= sharp.max()
    airy = int(np.ceil(0.61 * wave / na / pixel)) + 1  # a spot's own footprint: its Airy disk
    footprint = ndimage.binary_dilation(sharp > 0.05, iterations=airy)
    optics = Fluorescence(
        na=na, immersion=1.0, sample=1.33, depth=10, wavelength=wave, pixel=pixel,
        z_step=z_step_for_blur(3.0, na, pixel, 1.0, wave), model="scalar",
    )  # fmt: skip
    return rendered(
        "bright puncta on a dark ground at 6 depths, scalar PSF (NA 0.8 air into water), N=6, "
        "16-bit",
        sharp, steps(size, 6, rng), 6, rng, footprint,
        optics=optics, levels_per_slice=2, photons=2000, read_noise=0.002, bits=16,
    )  # fmt: skip


def real(description: str, *paths: str) -> Callable[..., Case]:
    return lambda size, seed=0: Case(
        description, np.asarray(open_image([DATA / p for p in paths]).as_stack().data)
    )


CASES: dict[str, Callable[..., Case]] = {  # (size, seed offset) → case
    "fluo-noisy": fluo_noisy,
    "bf-rgb-disk": bf_rgb_disk,
    "diatom-periodic": diatom_periodic,
    "ihc-steps": ihc_steps,
    "coins-tilted-drift": coins_tilted_drift,
    "partly-textureless": partly_textureless,
    "ihc-occluded-steps": ihc_occluded_steps,
    "bf-astigmatic-halo": bf_astigmatic_halo,
    "fluo-spherical-coarse": fluo_spherical_coarse,
    "bf-phase-wave": bf_phase_wave,
    "fluo-psf-haze": fluo_psf_haze,
    "puncta-depths": puncta_depths,
    "real-diatom": real(
        "real: diatom brightfield, 3 planes (MFusionJ)",
        *(f"diatom-brightfield/{k}.jpg" for k in (1, 2, 3)),
    ),
    "real-skeleton": real(
        "real: skeleton brightfield, 3 planes (EPFL EDF)", "skeleton-brightfield/stack.tif"
    ),
    "real-keyboard": real(
        "real: keyboard focal sweep, 32 planes (OpenFocus)", "keyboard-focal-sweep"
    ),
}


# ---------------------------------------------------------------------------------------------
# Scoring

COLUMNS = {  # key: (header, digits, higher is better)
    "psnr": ("PSNR dB", 2, True),
    "ssim": ("SSIM", 4, True),
    "focus_mae": ("focus MAE", 3, False),
    "qabf": ("Q^AB/F", 4, True),
    "ghost": ("ghost %", 3, False),
    "seconds": ("seconds", 2, None),
}


def qabf(case: Case, image: np.ndarray) -> float:
    rgb = case.stack.ndim == 4
    return metrics.qabf(metrics.luminance(case.stack, rgb), metrics.luminance(image, rgb))


def ghosts(case: Case, fused: np.ndarray) -> float:
    """Rings and ghosts around bright spots: the light the fused image has above or below the
    truth beyond the camera's noise, outside every spot's own footprint, in % of the spots'
    light. The residual is smoothed (Gaussian, 1 px) so that a ring, not a noisy pixel, counts;
    the noise is the background's in the planes (robust spread of their fine detail)."""
    outside = ~case.footprint
    detail = case.stack - ndimage.median_filter(case.stack, size=(1, 5, 5))
    noise = 1.4826 * np.median(np.abs(detail[:, outside]))
    residual = ndimage.gaussian_filter(fused.astype(float) - case.truth, 1.0)
    floor = 3 * noise / (2 * np.sqrt(np.pi))  # 3 σ of white noise smoothed so
    excess = np.clip(np.abs(residual[outside]) - floor, 0, None).sum()
    light = (case.truth[case.footprint] - np.median(case.truth[outside])).sum()
    return 100 * excess / light


def score(case: Case, fused: np.ndarray, focus: np.ndarray | None) -> dict:
    scores = {"qabf": qabf(case, fused)}
    if case.footprint is not None:
        scores["ghost"] = ghosts(case, fused)
    if case.truth is not None:
        scores["psnr"] = metrics.psnr(case.truth, fused)
        scores["ssim"] = metrics.ssim(case.truth, fused)
        if focus is not None:
            scores["focus_mae"] = metrics.focus_mae(focus, case.depth, case.textured)
    return scores


def row(name: str, scores: dict) -> list[str]:
    return [name] + [common.fmt(scores.get(k), d) for k, (_, d, _) in COLUMNS.items()]


def winners(results: dict) -> dict[str, list[str]]:
    """Per metric, the methods with the best score in one case (ties share)."""
    best = {}
    for key, (_, _, higher) in COLUMNS.items():
        values = {m: s[key] for m, s in results.items() if math.isfinite(s.get(key, math.nan))}
        if higher is None or not values:
            continue
        top = max(values.values()) if higher else min(values.values())
        best[key] = [m for m, v in values.items() if v == top]
    return best


def summary(report: dict, methods: list[str]) -> str:
    wins = {m: dict.fromkeys(COLUMNS, 0) for m in methods}
    for case in report["cases"].values():
        for key, names in winners(case["results"]).items():
            for m in names:
                wins[m][key] += 1
    rows = []
    for m in methods:
        scored = [c["results"][m] for c in report["cases"].values() if m in c["results"]]
        if not scored:
            continue
        medians = {}
        for key in COLUMNS:
            values = [s[key] for s in scored if math.isfinite(s.get(key, math.nan))]
            medians[key] = float(np.median(values)) if values else None
        count = [str(wins[m][k]) for k in ("psnr", "ssim", "focus_mae", "qabf")]
        rows.append([*row(m, medians), str(len(scored)), " ".join(count)])
    headers = ["method", *(h for h, _, _ in COLUMNS.values()), "cases", "best: PSNR SSIM MAE Q"]
    return common.table(headers, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small cases, to check it works")
    parser.add_argument("--cases", help=f"comma-separated, from: {', '.join(CASES)}")
    parser.add_argument("--methods", help=f"comma-separated, from: {', '.join(common.METHODS)}")
    parser.add_argument("--size", type=int, help="side of the rendered cases (default 256)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="render each synthetic case this many times, from other seeds too (name@k), to see "
        "how far one rendering decides a ranking (default 1)",
    )
    parser.add_argument(
        "--weights",
        help="PDMNet weights files as extra methods, NAME=PATH,... with NAME pdmnet[-…]@label "
        "(e.g. pdmnet@first=src/napari_pdmfuse/training/teacher.pt)",
    )
    parser.add_argument("--out", type=Path, help="write every score to this JSON file")
    args = parser.parse_args()

    names = args.cases.split(",") if args.cases else list(QUICK["cases"] if args.quick else CASES)
    size = args.size or (QUICK["size"] if args.quick else 256)
    methods = args.methods.split(",") if args.methods else list(common.METHODS)
    extra = common.parse_weights(args.weights)
    if args.seeds < 1:
        parser.error("--seeds must be at least 1")
    unknown = [n for n in names if n not in CASES] + [m for m in methods if m not in common.METHODS]
    if unknown:
        parser.error(f"unknown case or method: {', '.join(unknown)}")

    report = {"machine": common.machine(), "tools": common.tool_versions(), "skipped": {}}
    report["cases"] = {}
    print(common.describe_machine(report["machine"]))
    for tool in report["tools"].values():
        print(f"Tool: {tool}")
    runnable = list(extra)
    for m in methods:
        try:
            common.check_available(m, args.device)
            runnable.append(m)
        except common.Skip as why:
            report["skipped"][m] = str(why)
            print(f"Skipping {m}: {why}")
    metrics.self_check()

    instances = [
        (name if k == 0 else f"{name}@{k}", CASES[name], SEED_STEP * k)
        for name in names
        for k in range(1 if name.startswith("real-") else args.seeds)
    ]
    for name, make, seed in instances:
        case = make(size, seed)
        shape = "×".join(map(str, case.stack.shape))
        print(f"\n== {name}: {case.description} — {shape} {case.stack.dtype}")
        results, rows, failures = {}, [], {}
        for m in runnable:
            try:
                base, weights = extra.get(m, (m, None))
                run = common.run_method(base, case.stack, args.device, weights)
            except common.Skip as why:
                failures[m] = str(why)
                continue
            results[m] = {**score(case, run.fused, run.focus), "seconds": run.seconds}
            rows.append(row(m, results[m]))
        if case.truth is not None:  # the Q^AB/F of a perfect fusion of this stack
            rows.append(row("(truth)", {"qabf": qabf(case, case.truth)}))
        print(common.table(["method", *(h for h, _, _ in COLUMNS.values())], rows))
        for m, why in failures.items():
            print(f"  {m} failed: {why}")
        report["cases"][name] = {
            "description": case.description,
            "shape": list(case.stack.shape),
            "dtype": str(case.stack.dtype),
            "results": results,
            "failed": failures,
        }

    count = len(report["cases"])
    print(f"\n== Summary over {count} cases: medians, and in how many cases each is best")
    print(summary(report, runnable))
    if args.out:
        args.out.write_text(json.dumps(common.finite(report), indent=2) + "\n")
        print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
