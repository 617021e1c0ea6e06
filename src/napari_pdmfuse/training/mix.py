"""The training mix: which optics the training stacks are rendered through, how often, and
over what ranges — one table per version, read by :func:`.rendering.random_stack`.

``"v1"`` is the mix the first design was trained on (intensity PSFs only); it must keep
drawing the same values in the same order, so its stacks stay the same bit for bit. ``"v2"``
adds physical optics (:mod:`.optics`): brightfield and reflected light as wave optics,
widefield fluorescence with haze and aberrated PSFs, and the acquisition's faults.

Each kind names its ``share`` of the stacks, its ``specimen`` (what :func:`.rendering.specimen`
draws), its ``optics`` class (none: an intensity PSF) and the ranges of its parameters, drawn
in the table's order by :func:`draw`: ``(low, high)`` uniform, ``("log10", low, high)``
10^uniform, a list a choice, ``("sometimes", p, spec)`` the spec with probability ``p`` and
0 otherwise, :data:`BLUR` the blur per slice, and anything else as it is.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .optics import ABERRATED_PSFS, PSFS, Brightfield, Fluorescence, Reflected, z_step_for_blur

SLICE_COUNTS = (2, 3, 4, 5, 6, 8, 10, 12, 16)
#: Range of the blur per slice of defocus (px), before the (1 + 4 / N) that short stacks get.
BLUR_RANGE = (0.8, 4.0)
#: The blur per slice: uniform in the stack's blur range, times (1 + 4 / N).
BLUR = "blur"
#: Parameters of a kind that are not :func:`.rendering.render_stack`'s: they pick the
#: specimen and build the optics object.
SETUP = ("share", "specimen", "optics")

CAMERA = {
    "photons": ("log10", 1.5, 4),
    "read_noise": ("log10", -3.5, -1.7),
    "bits": [8, 12, 16],
    "drift": [0, 0.01, 0.03],
}
ACQUISITION = {
    "magnification": ("sometimes", 0.3, (-0.004, 0.004)),
    "lateral_drift": ("sometimes", 0.2, (0.0, 0.3)),
    "illumination": ("sometimes", 0.25, (0.0, 0.15)),
}

MIXES: dict[str, dict[str, dict[str, Any]]] = {
    "v1": {
        "intensity": {
            "share": 1.0,
            "specimen": "content",
            "psf_kind": list(PSFS),
            "blur_per_slice": BLUR,
            "depth_of_field": (0, 0.4),
            **CAMERA,
        },
    },
    "v2": {
        "intensity": {  # v1's optics, for the content no physical model here covers
            "share": 0.25,
            "specimen": "content",
            "psf_kind": list(PSFS),
            "blur_per_slice": BLUR,
            "depth_of_field": (0, 0.4),
            **CAMERA,
            **ACQUISITION,
        },
        "aberrated": {  # intensity PSFs that differ across focus, halos, occlusion at steps
            "share": 0.1,
            "specimen": "content",
            "psf_kind": list(ABERRATED_PSFS),
            "blur_per_slice": BLUR,
            "depth_of_field": (0, 0.4),
            "halo": ("sometimes", 0.5, (0.2, 1.0)),
            "occlusion": [False, False, True],
            "levels_per_slice": 2,
            **CAMERA,
            **ACQUISITION,
        },
        "brightfield": {  # stained or transparent specimens with phase, wave optics
            "share": 0.3,
            "specimen": "transmittance",
            "optics": Brightfield,
            "na": (0.1, 0.75),
            "condenser": (0.15, 0.95),
            "sampling": (2.5, 4.5),  # pixels per λ / NA
            "blur_per_slice": BLUR,
            "levels_per_slice": 2,
            **CAMERA,
            **ACQUISITION,
        },
        "reflected": {  # surfaces with height, nearly coherent epi-illumination
            "share": 0.1,
            "specimen": "surface",
            "optics": Reflected,
            "na": (0.1, 0.9),
            "condenser": (0.05, 0.5),
            "sampling": (2.5, 4.5),
            "blur_per_slice": BLUR,
            "levels_per_slice": 2,
            **CAMERA,
            **ACQUISITION,
        },
        "fluorescence": {  # emitters on a dark ground, haze that adds, index mismatch
            "share": 0.25,
            "specimen": "emission",
            "optics": Fluorescence,
            # (NA, immersion index): air, water and oil objectives
            "objective": [
                (0.3, 1.0),
                (0.5, 1.0),
                (0.75, 1.0),
                (0.9, 1.0),
                (1.0, 1.33),
                (1.2, 1.33),
                (1.3, 1.515),
                (1.4, 1.515),
            ],
            "sample": [0, 0, 1.33, 1.38, 1.45],  # 0: the immersion's index (no mismatch)
            "depth": (0.0, 30.0),
            "wavelength": (0.45, 0.65),
            "sampling": (2.5, 4.5),
            "blur_per_slice": BLUR,
            "levels_per_slice": 2,
            "bleaching": ("sometimes", 0.5, (0.0, 0.03)),
            **CAMERA,
            **ACQUISITION,
        },
    },
}
#: The renderer's mix when none is named: v1, which the first design's weights (the light
#: network's teacher) were trained on, rendered the same bit for bit.
DEFAULT_MIX = "v1"
#: The mix the training recipe renders by default: the shipped weights were trained on v2.
RECIPE_MIX = "v2"


def draw(
    rng: np.random.Generator, spec: Any, n_slices: int, blur_range: tuple[float, float]
) -> Any:
    """One value of a parameter's spec (see the module's docstring)."""
    if spec is BLUR or spec == BLUR:
        return float(rng.uniform(*blur_range) * (1 + 4 / n_slices))
    if isinstance(spec, list):
        return spec[rng.choice(len(spec))]  # as rng.choice(spec) draws, for tuples too
    if isinstance(spec, tuple) and spec and spec[0] == "log10":
        return float(10 ** rng.uniform(spec[1], spec[2]))
    if isinstance(spec, tuple) and spec and spec[0] == "sometimes":
        return draw(rng, spec[2], n_slices, blur_range) if rng.random() < spec[1] else 0.0
    if isinstance(spec, tuple) and len(spec) == 2:
        return float(rng.uniform(*spec))
    return spec


def kind_of(rng: np.random.Generator, mix: str) -> dict[str, Any]:
    """One kind of the mix, by its share (a mix of one kind draws nothing)."""
    kinds = list(MIXES[mix].values())
    if len(kinds) == 1:
        return kinds[0]
    shares = np.array([k["share"] for k in kinds])
    return kinds[rng.choice(len(kinds), p=shares / shares.sum())]


def optics_of(kind: dict[str, Any], values: dict[str, Any], rgb: bool) -> dict[str, Any]:
    """``render_stack``'s keywords from a kind's drawn values: the optics object built from
    the physical ones (pixel from the sampling, plane spacing from the blur per slice)."""
    cls = kind.get("optics")
    if cls is None:
        return values
    values = dict(values)
    sampling, blur = values.pop("sampling"), values.pop("blur_per_slice")
    if cls is Fluorescence:
        na, immersion = values.pop("objective")
        sample = values.pop("sample") or immersion
        wave = values.pop("wavelength")
        pixel = wave / (sampling * na)
        optics = cls(
            na=na, immersion=immersion, sample=sample, depth=values.pop("depth"),
            wavelength=wave, pixel=pixel,
            z_step=z_step_for_blur(blur, na, pixel, immersion, wave),
            model="vectorial" if na > 0.9 else "scalar",
        )  # fmt: skip
    else:
        na = values.pop("na")
        wave = 0.54 if rgb else 0.55
        pixel = wave / (sampling * na)
        optics = cls(
            na=na, condenser=values.pop("condenser"), wavelength=wave, pixel=pixel,
            z_step=z_step_for_blur(blur, na, pixel, 1.0, wave),
        )  # fmt: skip
    return {**values, "optics": optics}
