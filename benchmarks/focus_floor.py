"""How the focus map's run floor was chosen: focus MAE on held-out rendered stacks per floor.

PDMNet's focus map is the mean slice position over the run of slices around the best one whose
weight is at least a floor of the best's (``napari_pdmfuse.model.focus_map.RUN_FLOOR``); floor 0
is the mean over all slices. Scored on 48 stacks the network never trained on: the training's
12 validation stacks and 36 more rendered from the next seed (validation content only, 2–30
slices, every PSF, noise level and bit depth the renderer draws), 192 × 192 px.

    python benchmarks/focus_floor.py
    python benchmarks/focus_floor.py --floors 0,0.1 --weights runs/head/pdmnet.pt
"""

from __future__ import annotations

import argparse

import common
import metrics
import numpy as np

from napari_pdmfuse import fuse
from napari_pdmfuse.model import focus_map
from napari_pdmfuse.training import rendering as render
from napari_pdmfuse.training.data import VALIDATION_SEED, validation_stacks


def stacks() -> list[render.RenderedStack]:
    """The training's 12 validation stacks, then 36 more from the next seed."""
    return validation_stacks() + validation_stacks(seed=VALIDATION_SEED + 1, per_count=6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--floors", default="0,0.02,0.05,0.1,0.15,0.2,0.3")
    parser.add_argument("--weights", help="other PDMNet weights (default: the shipped ones)")
    args = parser.parse_args()
    floors = [float(f) for f in args.floors.split(",")]
    print(common.describe_machine(common.machine()))
    cases = stacks()
    errors = {f: [] for f in floors}
    for case in cases:
        for floor in floors:
            # floor 0: a cut below any weight float32 holds, so every slice is in the run
            focus_map.RUN_FLOOR = floor or 1e-38
            result = fuse(case.stack, method="pdmnet", weights=args.weights)
            errors[floor].append(metrics.focus_mae(result.focus_map, case.depth, case.textured))
    rows = [
        [
            "0 (all slices)" if f == 0 else f"{f:g}",
            f"{np.mean(e):.4f}",
            f"{np.median(e):.4f}",
            f"{np.mean(e[:12]):.4f}",
        ]
        for f, e in ((f, np.array(v)) for f, v in errors.items())
    ]
    print(f"focus MAE (slices, textured pixels) over {len(cases)} held-out stacks")
    print(common.table(["floor", "mean", "median", "mean, first 12"], rows))


if __name__ == "__main__":
    main()
