"""Fuse the real stacks beside the checkout and save pictures to look at: seams, halos, ghosts.

For each stack, one PNG row: a middle input plane, PDMNet's fused image, PDMNet's focus map
(turbo, darkened where confidence is low) and the wavelet method's fused image.

    python benchmarks/real_stacks.py            # writes docs/images/real-<name>.png

The skeleton stack is GPL-licensed, for tests and benchmarks only: its picture is made to look
at, not kept in docs/.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from napari.utils.colormaps import ensure_colormap
from skimage.transform import downscale_local_mean

from napari_pdmfuse import fuse
from napari_pdmfuse.reading import open_image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
STACKS = {  # the skeleton stack is GPL-licensed: looked at here, its pictures not kept in docs/
    "diatom": [DATA / "diatom-brightfield" / f"{i}.jpg" for i in (1, 2, 3)],
    "skeleton": [DATA / "skeleton-brightfield" / "stack.tif"],
    "keyboard": [DATA / "keyboard-focal-sweep"],
}
MAX_WIDTH = 1600  # px of the saved row; wider rows are averaged down to fit


def as_rgb8(image: np.ndarray) -> np.ndarray:
    image = image.astype(np.float32)
    image = (image - image.min()) / max(float(np.ptp(image)), 1e-6) * 255
    image = np.repeat(image[..., None], 3, -1) if image.ndim == 2 else image[..., :3]
    return image.astype(np.uint8)


def focus_picture(focus: np.ndarray, confidence: np.ndarray, n_slices: int) -> np.ndarray:
    rgba = ensure_colormap("turbo").map((focus / max(n_slices - 1, 1)).ravel())
    rgb = rgba[:, :3].reshape(*focus.shape, 3) * (0.25 + 0.75 * confidence[..., None])
    return (rgb * 255).astype(np.uint8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, inputs in STACKS.items():
        if not inputs[0].exists():
            print(f"skipping {name}: {inputs[0]} not found")
            continue
        loaded = open_image(inputs).as_stack()
        stack = np.asarray(loaded.data)
        ours = fuse(stack, method="pdmnet")
        wavelet = fuse(stack, method="wavelet")
        n = stack.shape[0]
        gap = np.full((stack.shape[1], 4, 3), 255, np.uint8)
        row = [
            as_rgb8(stack[n // 2]),
            as_rgb8(ours.fused),
            focus_picture(ours.focus_map, ours.confidence, n),
            as_rgb8(wavelet.fused),
        ]
        picture = np.concatenate([p for part in row for p in (part, gap)][:-1], axis=1)
        factor = -(-picture.shape[1] // MAX_WIDTH)
        if factor > 1:
            picture = downscale_local_mean(picture, (factor, factor, 1)).astype(np.uint8)
        path = args.out / f"real-{name}.png"
        iio.imwrite(path, picture)
        print(f"{name}: {stack.shape} -> {path}")


if __name__ == "__main__":
    main()
