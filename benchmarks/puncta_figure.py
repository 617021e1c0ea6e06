"""A picture of rings and ghosts around bright puncta on a dark ground: the quality case
``puncta-depths`` (puncta at six depths, fluorescence through a physical PSF) fused by several
methods, each beside the truth, stretched so that a ring 1 % of a spot's peak shows.

    python benchmarks/puncta_figure.py                     # pdmnet, enfuse, wavelet
    python benchmarks/puncta_figure.py --methods pdmnet,pdmnet-hard,enfuse,wavelet
    python benchmarks/puncta_figure.py --out docs/images/puncta-ghosts.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import common
import imageio.v3 as iio
import numpy as np
import quality

CROP = 128  # px of the case's field shown, from its top-left corner, at twice the size
STRETCH = 0.08  # the display's white: this share of the truth's brightest spot above the ground


def panel(image: np.ndarray, ground: float, white: float) -> np.ndarray:
    """``image`` as 8-bit grey, from the ground (black) to ``white``, with a thin border."""
    scaled = np.clip((image[:CROP, :CROP] - ground) / (white - ground), 0, 1)
    scaled = np.repeat(np.repeat(scaled, 2, axis=0), 2, axis=1)
    return np.pad((255 * np.sqrt(scaled)).astype(np.uint8), 3, constant_values=255)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="pdmnet,enfuse,wavelet", help="comma-separated")
    parser.add_argument("--size", type=int, default=256, help="side of the case (default 256)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--out", type=Path, default=Path("docs/images/puncta-ghosts.png"))
    args = parser.parse_args()

    print(common.describe_machine(common.machine()))
    case = quality.CASES["puncta-depths"](args.size)
    ground = float(np.median(case.truth[~case.footprint]))
    white = ground + STRETCH * (case.truth.max() - ground)
    panels, names = [panel(case.truth, ground, white)], ["truth"]
    for name in args.methods.split(","):
        run = common.run_method(name, case.stack, args.device)
        print(f"{name}: ghost {quality.ghosts(case, run.fused):.3f} % of the spots' light")
        panels.append(panel(run.fused, ground, white))
        names.append(name)
    iio.imwrite(args.out, np.concatenate(panels, axis=1))
    print(f"Wrote {args.out}: {', '.join(names)}, left to right ({CROP}² px crop shown 2×, "
          f"square-root stretch, white at {STRETCH:.0%} of the brightest spot)")  # fmt: skip


if __name__ == "__main__":
    main()
