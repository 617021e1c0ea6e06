"""Sample focus stacks shipped with the package, for napari's File ▸ Open Sample menu.

Qt-free: napari calls these functions and builds the layers itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).parent / "sample"

DIATOM_NAME = "diatom (brightfield, 3 planes)"
DIATOM_CREDIT = (
    "Diatom brightfield focus stack from the MFusionJ project "
    "(github.com/gcristobal/MFusionJ, images/), BSD-3-Clause licence; cite Singh et al., "
    "SPIE 12998, 129980Q (2024). The watermark on the right edge credits the source image "
    "database."
)


def diatom_stack() -> np.ndarray:
    """The diatom stack as a (3, Y, X, 3) uint8 RGB array, planes ordered by file name."""
    from skimage.io import imread

    files = sorted((SAMPLE_DIR / "diatom-brightfield").glob("*.jpg"))
    return np.stack([np.asarray(imread(f), dtype=np.uint8) for f in files])


def diatom() -> list[tuple]:
    """napari sample: the diatom stack as one RGB image layer, Z along the first axis."""
    metadata = {
        "credit": DIATOM_CREDIT,
        "license": "BSD-3-Clause",
        "source": "https://github.com/gcristobal/MFusionJ",
    }
    return [(diatom_stack(), {"name": DIATOM_NAME, "rgb": True, "metadata": metadata}, "image")]
