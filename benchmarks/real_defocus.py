"""Fusion quality under real optics: stacks composed from the real defocus series, with truth.

Each series in ../shared/data (a flat wafer in reflected light, RGB; mitochondria in
fluorescence, 16-bit) is one field at known focus offsets. A fixed, seeded set of stacks of known
depth (terraces on whole planes, tilt, dome, mixed; 5–9 planes; 1–2 real offset spacings per
plane) is composed from the reporting part of each (``napari_pdmfuse.training.defocus``), and
every method is scored against the in-focus image: SSIM, PSNR, SSIM within 6 px of depth steps,
SSIM over the pixels with detail (``RenderedStack.textured``: most pixels of both series are
flat, where SSIM measures only how a method's noise matches the in-focus image's), and
focus-map error in planes (MAE over textured pixels, and over textured pixels whose depth lies
on a whole plane). Other tools' results are cached in benchmarks/.cache by stack content.

    python benchmarks/real_defocus.py                        # report part, every method
    python benchmarks/real_defocus.py --part tune            # the tuning part instead
    python benchmarks/real_defocus.py --methods pdmnet,wavelet --out results.json
    python benchmarks/real_defocus.py --weights pdmnet@cheap=cheap.pt,pdmnet-hard@cheap=cheap.pt
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass

import common
import metrics
import numpy as np
from scipy import ndimage

from napari_pdmfuse.training import defocus
from napari_pdmfuse.training.rendering import RenderedStack

#: The depth layouts, in turn; "terraces" are the steps, each region on a whole plane.
KINDS = ("terraces", "tilted", "dome", "mixed")
SIZE = 256  # px: crops of both series
SHORT = {"wafer-defocus-reflected": "wafer", "mitochondria-defocus-fluorescence": "mito"}
SEED = 27_000
DEFAULT_METHODS = (
    "pdmnet", "pdmnet-hard", "wavelet", "pyramid", "argmax",
    "enfuse", "openfocus-dtcwt", "openfocus-stackmffv3", "clesperanto-edf",
)  # fmt: skip
SHIPPED = "pdmnet"
STEP_REACH = 6  # px: "near a depth step"
WHOLE = 0.05  # planes: a depth this close to a whole plane lies on it

COLUMNS = {  # key: (header, digits, higher is better)
    "ssim": ("SSIM", 4, True),
    "psnr": ("PSNR dB", 2, True),
    "ssim_steps": ("SSIM@steps", 4, True),
    "ssim_detail": ("SSIM@detail", 4, True),
    "focus_mae": ("focus MAE", 3, False),
    "focus_mae_whole": ("MAE whole", 3, False),
    "seconds": ("seconds", 1, None),
}


@dataclass
class Case:
    series: str
    kind: str
    step_um: float
    stack: RenderedStack


def cases(part: str, per_series: int, size: int = SIZE) -> dict[str, Case]:
    """The fixed set: ``per_series`` stacks of each series, the layouts in turn."""
    out = {}
    for s, name in enumerate(defocus.SERIES):
        series = defocus.load_series(name)
        for i in range(per_series):
            kind = KINDS[i % len(KINDS)]
            rng = np.random.default_rng(SEED + 100 * s + i)
            depth = np.zeros(1)
            while np.ptp(depth) < 1:  # terraces all on one plane are no steps: draw again
                layout = defocus.random_layout(rng, series, part, size, kinds=(kind,))
                depth, step, origin, n = layout
            stack = defocus.compose(series, depth, step, part, origin, rng=rng, n_planes=n)
            out[f"{SHORT[name]}-{kind}-{i}"] = Case(name, kind, step, stack)
    return out


def near_steps(depth: np.ndarray) -> np.ndarray:
    """Pixels within STEP_REACH px of a depth step (half a plane or more between neighbours)."""
    jump = ndimage.maximum_filter(depth, 3) - ndimage.minimum_filter(depth, 3) >= 0.5
    return ndimage.distance_transform_edt(~jump) <= STEP_REACH if jump.any() else jump


def score(case: RenderedStack, fused: np.ndarray, focus: np.ndarray | None) -> dict:
    scores = {
        "ssim": metrics.ssim(case.truth, fused),
        "psnr": metrics.psnr(case.truth, fused),
        "ssim_steps": metrics.ssim(case.truth, fused, near_steps(case.depth)),
        "ssim_detail": metrics.ssim(case.truth, fused, case.textured),
    }
    if focus is not None:
        whole = case.textured & (np.abs(case.depth - np.round(case.depth)) <= WHOLE)
        scores["focus_mae"] = metrics.focus_mae(focus, case.depth, case.textured)
        scores["focus_mae_whole"] = metrics.focus_mae(focus, case.depth, whole)
    return scores


def rivals(methods: list[str]) -> list[str]:
    """The methods the shipped PDMNet is judged against: all but its own variants."""
    return [m for m in methods if not m.startswith("pdmnet")]


def best(results: dict, key: str, among: list[str]) -> float | None:
    higher = COLUMNS[key][2]
    values = [
        results[m][key] for m in among if math.isfinite(results.get(m, {}).get(key, math.nan))
    ]
    if not values:
        return None
    return max(values) if higher else min(values)


def beaten(results: dict, key: str, methods: list[str]) -> bool:
    """Whether another tool does better than the shipped PDMNet on ``key``."""
    ours = results.get(SHIPPED, {}).get(key, math.nan)
    top = best(results, key, rivals(methods))
    if top is None or not math.isfinite(ours):
        return False
    return top > ours if COLUMNS[key][2] else top < ours


def table(results: dict, methods: list[str]) -> str:
    rows = []
    for m in methods:
        if m not in results:
            continue
        row = [m]
        for key, (_, digits, higher) in COLUMNS.items():
            cell = common.fmt(results[m].get(key), digits)
            if m == SHIPPED and higher is not None and beaten(results, key, methods):
                cell += " ✗"
            row.append(cell)
        rows.append(row)
    return common.table(["method", *(h for h, _, _ in COLUMNS.values())], rows)


def summary(report: dict, methods: list[str], series: str | None) -> str:
    """Means over the stacks (of one series, or all), and on how many the shipped PDMNet
    loses to another tool."""
    chosen = [c for c in report["stacks"].values() if series in (None, c["series"])]
    rows = []
    for m in methods:
        scored = [c["results"][m] for c in chosen if m in c["results"]]
        if not scored:
            continue
        means = {}
        for key in COLUMNS:
            values = [s[key] for s in scored if math.isfinite(s.get(key, math.nan))]
            means[key] = float(np.mean(values)) if values else None
        row = [m] + [common.fmt(means[k], d) for k, (_, d, _) in COLUMNS.items()]
        rows.append([*row, str(len(scored))])
    losses = [
        f"{h}: {sum(beaten(c['results'], k, methods) for c in chosen)}/{len(chosen)}"
        for k, (h, _, higher) in COLUMNS.items()
        if higher is not None
    ]
    text = common.table(["method", *(h for h, _, _ in COLUMNS.values()), "stacks"], rows)
    return f"{text}\n{SHIPPED} beaten by another tool (✗) on — " + ", ".join(losses)


def error_ratio(report: dict, methods: list[str]) -> str:
    """The shipped PDMNet's mean 1 − SSIM against the best other tool's."""
    means = {}
    for m in [*rivals(methods), SHIPPED]:
        values = [c["results"][m]["ssim"] for c in report["stacks"].values() if m in c["results"]]
        if len(values) == len(report["stacks"]):
            means[m] = 1 - float(np.mean(values))
    if SHIPPED not in means or len(means) < 2:
        return ""
    peer = min((m for m in means if m != SHIPPED), key=means.get)
    change = means[SHIPPED] / means[peer] - 1
    return (
        f"Mean 1 − SSIM: {SHIPPED} {means[SHIPPED]:.4f}, best other tool {peer} "
        f"{means[peer]:.4f} ({change:+.0%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", default="report", choices=("report", "tune"))
    parser.add_argument("--per-series", type=int, default=8, help="stacks per series (8)")
    parser.add_argument("--size", type=int, default=SIZE, help=f"crop side in px ({SIZE})")
    parser.add_argument("--methods", help=f"comma-separated (default: {','.join(DEFAULT_METHODS)})")
    parser.add_argument(
        "--weights",
        help="extra PDMNet methods, NAME=PATH,...: pdmnet@cheap=w.pt runs pdmnet with w.pt",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--out", help="write every score to this JSON file")
    args = parser.parse_args()

    methods = args.methods.split(",") if args.methods else list(DEFAULT_METHODS)
    unknown = [m for m in methods if m not in common.METHODS]
    if unknown:
        parser.error(f"unknown method: {', '.join(unknown)}; choose from {common.METHODS}")
    extra = common.parse_weights(args.weights)
    missing = [n for n in defocus.SERIES if not (defocus.data_root() / n).is_dir()]
    if missing:
        parser.error(f"no {', '.join(missing)} in {defocus.data_root()} (set $PDMFUSE_DATA)")

    report = {"machine": common.machine(), "tools": common.tool_versions(), "skipped": {}}
    report.update(part=args.part, weights={m: p for m, (_, p) in extra.items()}, stacks={})
    print(common.describe_machine(report["machine"]))
    for tool in report["tools"].values():
        print(f"Tool: {tool}")
    runnable = []
    for m in methods:
        try:
            common.check_available(m, args.device)
            runnable.append(m)
        except common.Skip as why:
            report["skipped"][m] = str(why)
            print(f"Skipping {m}: {why}")
    runnable += list(extra)

    for name, case in cases(args.part, args.per_series, args.size).items():
        stack = case.stack
        print(
            f"\n== {name}: {len(stack.stack)} planes {case.step_um:.3g} µm apart, "
            f"{'×'.join(map(str, stack.stack.shape[1:]))} {stack.stack.dtype}, "
            f"depth {stack.depth.min():.2f}–{stack.depth.max():.2f}, "
            f"{stack.textured.mean():.0%} textured"
        )
        results, failures = {}, {}
        for m in runnable:
            try:
                if m in extra:
                    base, path = extra[m]
                    run = common.run_method(base, stack.stack, args.device, path)
                else:
                    run = common.run_cached(m, stack.stack, args.device)
            except common.Skip as why:
                failures[m] = str(why)
                continue
            results[m] = {**score(stack, run.fused, run.focus), "seconds": run.seconds}
        print(table(results, runnable))
        for m, why in failures.items():
            print(f"  {m} failed: {why}")
        report["stacks"][name] = {
            "series": case.series,
            "kind": case.kind,
            "planes": len(stack.stack),
            "step_um": case.step_um,
            "shape": list(stack.stack.shape),
            "results": results,
            "failed": failures,
        }

    for series in (*defocus.SERIES, None):
        print(f"\n== Means over the {series or 'all'} stacks ({args.part} part)")
        print(summary(report, runnable, series))
    print(error_ratio(report, runnable))
    if args.out:
        with open(args.out, "w") as out:
            out.write(json.dumps(common.finite(report), indent=2) + "\n")
        print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
