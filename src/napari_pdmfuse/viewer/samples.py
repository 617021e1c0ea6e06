"""Sample focus stacks shipped with the package, for napari's File ▸ Open Sample menu.

Two real stacks (a brightfield diatom, a photographic keyboard sweep) to judge fusions by eye,
and a rendered stack that comes with its ground truth — the sharp image and the depth of every
pixel — to judge them by measurement. Qt-free: napari calls these functions and builds the
layers itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).parent.parent / "sample"

DIATOM_NAME = "diatom (brightfield, 3 planes)"
DIATOM_CREDIT = (
    "Diatom brightfield focus stack from the MFusionJ project "
    "(github.com/gcristobal/MFusionJ, images/), BSD-3-Clause licence; cite Singh et al., "
    "SPIE 12998, 129980Q (2024). The watermark on the right edge credits the source image "
    "database."
)

KEYBOARD_NAME = "keyboard (focal sweep, 32 planes)"
KEYBOARD_CREDIT = (
    "Hand-held focal sweep of a keyboard, the demo stack of OpenFocus "
    "(github.com/Xinzhe99/OpenFocus, assets/Examples/), MIT licence; probably from the Mobile "
    "Depth dataset (Suwajanakorn et al., CVPR 2015)."
)

RENDERED_NAME = "rendered (12 planes, with truth)"
RENDERED_SEED = 1
RENDERED_CREDIT = (
    "Rendered by napari_pdmfuse.training.rendering.demo_stack(12, 256, seed=1, rgb=True, "
    "bits=8): a stained specimen (scikit-image's immunohistochemistry image) on a tilted, "
    "stepped surface, blurred by distance from focus, with photon and read noise."
)


def _jpeg_stack(folder: str) -> np.ndarray:
    """The JPEG planes of a sample folder as a (Z, Y, X, 3) uint8 array, in file-name order."""
    from skimage.io import imread

    files = sorted((SAMPLE_DIR / folder).glob("*.jpg"))
    return np.stack([np.asarray(imread(f), dtype=np.uint8) for f in files])


def diatom_stack() -> np.ndarray:
    """The diatom stack as a (3, Y, X, 3) uint8 RGB array, planes ordered by file name."""
    return _jpeg_stack("diatom-brightfield")


def keyboard_stack() -> np.ndarray:
    """The keyboard sweep as a (32, 360, 640, 3) uint8 RGB array, near focus first."""
    return _jpeg_stack("keyboard-focal-sweep")


def diatom() -> list[tuple]:
    """napari sample: the diatom stack as one RGB image layer, Z along the first axis."""
    metadata = {
        "credit": DIATOM_CREDIT,
        "license": "BSD-3-Clause",
        "source": "https://github.com/gcristobal/MFusionJ",
    }
    return [
        (
            diatom_stack(),
            {
                "name": DIATOM_NAME,
                "rgb": True,
                "axis_labels": ("z", "y", "x"),
                "metadata": metadata,
            },
            "image",
        )
    ]


def keyboard() -> list[tuple]:
    """napari sample: the keyboard focal sweep as one RGB image layer, Z first."""
    metadata = {
        "credit": KEYBOARD_CREDIT,
        "license": "MIT",
        "source": "https://github.com/Xinzhe99/OpenFocus",
    }
    return [
        (
            keyboard_stack(),
            {
                "name": KEYBOARD_NAME,
                "rgb": True,
                "axis_labels": ("z", "y", "x"),
                "metadata": metadata,
            },
            "image",
        )
    ]


def rendered() -> list[tuple]:
    """napari sample: a rendered RGB stack and its truth, to judge a fusion's accuracy.

    Three layers: the stack (12 planes, 8-bit RGB), ``truth (sharp)`` — the noise-free image
    every pixel would show in perfect focus, to compare with the fused image — and
    ``truth depth`` — the in-focus plane of every pixel (in slices, from 0), to compare with
    the focus map (same ``turbo`` colormap and range).
    """
    from ..training.rendering import demo_stack

    n_slices = 12
    rendered = demo_stack(n_slices, 256, seed=RENDERED_SEED, rgb=True, bits=8)
    truth = np.clip(np.rint(rendered.truth), 0, 255).astype(np.uint8)
    metadata = {"credit": RENDERED_CREDIT, "license": "BSD-3-Clause"}
    return [
        (
            rendered.stack,
            {
                "name": RENDERED_NAME,
                "rgb": True,
                "axis_labels": ("z", "y", "x"),
                "metadata": metadata,
            },
            "image",
        ),
        (
            truth,
            {"name": "truth (sharp)", "rgb": True, "visible": False, "metadata": metadata},
            "image",
        ),
        (
            rendered.depth,
            {
                "name": "truth depth",
                "colormap": "turbo",
                "contrast_limits": (0.0, float(n_slices - 1)),
                "visible": False,
                "metadata": {**metadata, "unit": "slices"},
            },
            "image",
        ),
    ]
