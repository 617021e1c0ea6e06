"""Focus stacks with known truth: a sharp image and a depth map rendered through defocus.

Ground truth for training PDMNet, for the tests and for the quality benchmarks. Each pixel is
blurred by the PSF of its own depth relative to the plane (a "gather" model), which matches thin
specimens seen through a microscope; noise is Poisson–Gaussian and the result is quantised like a
camera's output. Three options make the optics more like a real microscope's where a gather
model is too kind: occlusion at depth steps (a defocused near object spreads over the far one
and veils it), aberrated PSFs that differ above and below focus, and the bright and dark halos
that defocus gives the edges of a brightfield specimen. The shipped weights were trained
without them; the quality benchmarks use them to show how the methods fare on such stacks.
Contents come only from images bundled with scikit-image and from procedural microscopy-like
specimens, so nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from scipy import ndimage, signal

from .mix import BLUR_RANGE, DEFAULT_MIX, SETUP, SLICE_COUNTS, draw, kind_of, optics_of
from .optics import (
    PSFS,
    Brightfield,
    Fluorescence,
    Microscope,
    acquired,
    fluorescence_images,
)

#: scikit-image images bundled with the package, split so validation content is never trained on.
TRAIN_IMAGES = (
    "astronaut", "brick", "camera", "cat", "coffee", "grass", "gravel", "moon", "page",
    "retina", "rocket", "text", "cell", "stereo_motorcycle", "clock", "hubble_deep_field",
)  # fmt: skip
VALIDATION_IMAGES = ("immunohistochemistry", "coins")
PROCEDURAL = ("fluorescence", "brightfield", "periodic")


@dataclass
class RenderedStack:
    stack: np.ndarray  # (Z, Y, X[, 3]) quantised to ``dtype``
    truth: np.ndarray  # (Y, X[, 3]) float32 sharp image in the stack's data units, noise-free
    depth: np.ndarray  # (Y, X) float32, in-focus position in slice units
    textured: np.ndarray  # (Y, X) bool, where the sharp image has detail to judge focus by


# ---------------------------------------------------------------------------------------------
# Contents


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    field -= field.min()
    return field / max(field.max(), 1e-12)


def _fractal(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    octaves = [_smooth_noise(rng, shape, s) * s**0.7 for s in (1, 2, 4, 8, 16)]
    total = sum(octaves)
    return (total - total.min()) / max(np.ptp(total), 1e-12)


def fluorescence(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Blobs and filaments glowing on a dark background."""
    img = np.zeros(shape)
    h, w = shape
    n_blobs = rng.integers(5, 60)
    ys, xs = rng.uniform(0, h, n_blobs).astype(int), rng.uniform(0, w, n_blobs).astype(int)
    img[ys, xs] = rng.uniform(0.3, 1.0, n_blobs)
    img = ndimage.gaussian_filter(img, rng.uniform(1.0, 4.0)) * rng.uniform(20, 60)
    lines = np.zeros(shape)
    for _ in range(rng.integers(2, 25)):
        p = rng.uniform([0, 0], [h, w])
        direction = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.uniform(20, 2 * max(shape)))):
            direction += rng.normal(0, 0.15)
            p = p + np.array([np.sin(direction), np.cos(direction)])
            if 0 <= p[0] < h and 0 <= p[1] < w:
                lines[int(p[0]), int(p[1])] = rng.uniform(0.5, 1.0)
    img += ndimage.gaussian_filter(lines, rng.uniform(0.5, 1.2)) * 4
    img += 0.05 * _fractal(rng, shape) * rng.uniform(0, 1)
    return np.clip(img / max(np.percentile(img, 99.8), 1e-6), 0, 1)


def brightfield(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Stained tissue: absorbance texture with nuclei, through Beer–Lambert, in colour."""
    absorb = _fractal(rng, shape) * rng.uniform(0.3, 1.0)
    nuclei = np.zeros(shape)
    n = rng.integers(5, 80)
    nuclei[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = 1
    radius = rng.uniform(2, 8)
    nuclei = ndimage.gaussian_filter(nuclei, radius) * radius**2 * 6
    stains = rng.uniform(0.1, 1.2, (2, 3))
    od = absorb[..., None] * stains[0] + np.clip(nuclei, 0, 2)[..., None] * stains[1]
    return np.exp(-od)


def periodic(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fine gratings and pore lattices like a diatom frustule, fading in and out."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(2.5, 12)
    u = (np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period
    v = (-np.sin(angle) * xx + np.cos(angle) * yy) * 2 * np.pi / (period * rng.uniform(0.8, 2))
    pattern = np.cos(u) * (np.cos(v) if rng.random() < 0.5 else 1)
    envelope = _smooth_noise(rng, shape, max(shape) / 6)
    return 0.5 + 0.5 * pattern * envelope * rng.uniform(0.3, 1)


@cache
def bundled_image(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img  # stereo pairs: the left view
    img = img[..., :3] if img.ndim == 3 else img
    return img.astype(np.float32) / 255.0


def content(
    rng: np.random.Generator, shape: tuple[int, int], images: tuple[str, ...], rgb: bool
) -> np.ndarray:
    """A random crop of a bundled image or a procedural specimen, grey or RGB in [0, 1]."""
    kind = rng.choice([*images, *PROCEDURAL]) if images else rng.choice(PROCEDURAL)
    if kind == "fluorescence":
        img = fluorescence(rng, shape)
    elif kind == "brightfield":
        img = brightfield(rng, shape)
    elif kind == "periodic":
        img = periodic(rng, shape)
    else:
        src = bundled_image(str(kind))
        scale = rng.uniform(0.5, 1.5)
        need = [int(np.ceil(s / scale)) + 1 for s in shape]
        if any(n > m for n, m in zip(need, src.shape[:2], strict=True)):
            scale = max(s / m for s, m in zip(shape, src.shape[:2], strict=True)) * 1.01
            need = [int(np.ceil(s / scale)) + 1 for s in shape]
        y0 = rng.integers(0, src.shape[0] - need[0] + 1)
        x0 = rng.integers(0, src.shape[1] - need[1] + 1)
        crop = src[y0 : y0 + need[0], x0 : x0 + need[1]]
        zoom = (scale, scale) + (1,) * (crop.ndim - 2)
        img = ndimage.zoom(crop, zoom, order=1)[: shape[0], : shape[1]]
        if rng.random() < 0.5:
            img = img[:, ::-1]
    if img.ndim == 2 and rgb:
        tint = rng.uniform(0.4, 1.0, 3)
        img = img[..., None] * tint if rng.random() < 0.5 else np.repeat(img[..., None], 3, -1)
    elif img.ndim == 3 and not rgb:
        img = img @ np.array([0.2126, 0.7152, 0.0722])
    if rng.random() < 0.3:  # flatten part of the specimen: textureless regions
        keep = _smooth_noise(rng, shape, max(shape) / 8) > rng.uniform(0.3, 0.6)
        keep = ndimage.gaussian_filter(keep.astype(float), 2)
        flat = ndimage.gaussian_filter(img, (8, 8, 0)[: img.ndim])
        keep = keep[..., None] if img.ndim == 3 else keep
        img = keep * img + (1 - keep) * flat
    return np.clip(img, 0, 1).astype(np.float32)


def puncta(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Bright, diffraction-sized spots on a dark ground (vesicles, beads, FISH dots)."""
    img = np.zeros(shape)
    count = rng.integers(10, 200)
    ys, xs = rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)
    np.add.at(img, (ys, xs), 10 ** rng.uniform(-1, 0, count))
    img = ndimage.gaussian_filter(img, rng.uniform(0.5, 1.5))
    img += rng.uniform(0, 0.02) * _fractal(rng, shape)  # faint autofluorescence
    return np.clip(img / max(img.max(), 1e-6), 0, 1)


def relief_map(rng: np.random.Generator, sharp: np.ndarray, amplitude: float) -> np.ndarray:
    """A specimen's relief (µm) up to ``amplitude``: the thickness of its stained parts and
    of smooth, unstained cells, with fine texture."""
    shape = sharp.shape[:2]
    stained = 1 - (sharp if sharp.ndim == 2 else sharp.mean(-1))
    stained = ndimage.gaussian_filter(stained, rng.uniform(0.5, 2))
    cells = _smooth_noise(rng, shape, rng.uniform(3, 12)) > rng.uniform(0.5, 0.7)
    cells = ndimage.gaussian_filter(cells.astype(float), rng.uniform(1, 3))
    share = rng.uniform(0, 1)
    relief = share * stained / max(stained.max(), 1e-6) + (1 - share) * cells
    relief += rng.uniform(0, 0.3) * _fractal(rng, shape)
    return (amplitude * relief / max(relief.max(), 1e-6)).astype(np.float32)


#: What a training kind's specimen is (:data:`.mix.MIXES`): intensities seen through an
#: intensity PSF; a transmittance with phase; a reflecting surface with height; or emitters.
SPECIMENS = ("content", "transmittance", "surface", "emission")


def specimen(
    kind: str, rng: np.random.Generator, shape: tuple[int, int], images: tuple[str, ...], rgb: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """A specimen of one of :data:`SPECIMENS` kinds: its image in [0, 1] and its relief (µm;
    None for intensities and emitters)."""
    if kind == "emission":
        pick = rng.random()
        if pick < 0.35:
            sharp = puncta(rng, shape)
        elif pick < 0.7:
            sharp = fluorescence(rng, shape)
        else:
            sharp = content(rng, shape, images, False)
        sharp = (sharp[..., None] * rng.uniform(0.3, 1.0, 3)) if rgb else sharp
        return sharp.astype(np.float32), None
    sharp = content(rng, shape, images, rgb)
    if kind == "content":
        return sharp, None
    if kind == "transmittance":  # from nearly transparent (phase only) to fully stained
        sharp = 1 - 10 ** rng.uniform(-1.5, 0) * (1 - sharp)
        return sharp, relief_map(rng, sharp, 10 ** rng.uniform(-1.7, -0.4))
    reflectance = 0.2 + 0.8 * sharp  # surface: height up to about λ/4
    return reflectance.astype(np.float32), relief_map(rng, sharp, 10 ** rng.uniform(-1.7, -0.8))


# ---------------------------------------------------------------------------------------------
# Depth maps


#: The kinds of surface :func:`depth_map` draws from by default.
DEPTH_KINDS = ("smooth", "tilted", "steps", "mixed")


def depth_map(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n_slices: int,
    kinds: tuple[str, ...] = DEPTH_KINDS,
) -> np.ndarray:
    """Smooth, tilted and stepped surfaces, mapped into the stack's slice range, or with
    ``kinds=("terraces",)`` flat terraces at whole slices: the classic multi-focus case, where
    each region is in focus in exactly one plane and the focus map should be an integer.
    ``"dome"``: a paraboloid cap on a flat ground, its apex nearest, as a cell or a bead."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w] / max(shape)
    kind = rng.choice(list(kinds))
    if kind == "dome":
        cy, cx = rng.uniform(0.2, 0.8, 2) * (h / max(shape), w / max(shape))
        radius = rng.uniform(0.2, 0.6)
        depth = np.minimum(((yy - cy) ** 2 + (xx - cx) ** 2) / radius**2, 1.0)  # apex nearest
        return _span(rng, depth, n_slices)
    if kind == "terraces":
        depth = np.full(shape, float(rng.integers(n_slices)))
        for _ in range(rng.integers(1, 6)):
            depth[_ellipse(rng, yy, xx, shape)] = rng.integers(n_slices)
        return depth.astype(np.float32)
    depth = np.zeros(shape)
    if kind in ("smooth", "mixed"):
        depth += _smooth_noise(rng, shape, rng.uniform(0.08, 0.3) * max(shape))
    if kind in ("tilted", "mixed"):
        a, b = rng.normal(0, 1, 2)
        depth += a * yy + b * xx + 0.3 * rng.normal() * (yy - 0.5) ** 2
    if kind in ("steps", "mixed") or np.ptp(depth) == 0:
        base = depth.copy() if kind == "mixed" else np.full(shape, rng.random())
        for _ in range(rng.integers(1, 6)):
            inside = _ellipse(rng, yy, xx, shape)
            base[inside] = rng.random() + 0.2 * (base[inside] - base[inside].mean())
        depth = base
    return _span(rng, depth, n_slices)


def _span(rng: np.random.Generator, depth: np.ndarray, n_slices: int) -> np.ndarray:
    """``depth`` rescaled to a random part (half to all) of the stack's slice range."""
    depth = (depth - depth.min()) / max(np.ptp(depth), 1e-12)
    span = rng.uniform(0.5, 1.0)
    low = rng.uniform(0, 1 - span)
    return ((low + span * depth) * (n_slices - 1)).astype(np.float32)


def _ellipse(
    rng: np.random.Generator, yy: np.ndarray, xx: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """A random elliptical region of the plane (coordinates scaled by its longer side)."""
    h, w = shape
    cy, cx = rng.uniform(0, 1, 2) * (h / max(shape), w / max(shape))
    ry, rx = rng.uniform(0.05, 0.4, 2)
    theta = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (np.cos(theta) * dx + np.sin(theta) * dy) / rx
    v = (-np.sin(theta) * dx + np.cos(theta) * dy) / ry
    return u**2 + v**2 < 1


# ---------------------------------------------------------------------------------------------
# Optics and camera


def psf(kind: str, radius: float, side: int = 1) -> np.ndarray:
    """A normalised defocus PSF of the given blur radius in pixels (radius 0 → identity).

    ``side`` is the sign of the defocus (the object beyond the plane: +1, before it: −1); only
    the aberrated kinds depend on it. ``astigmatic``: an elliptical Gaussian whose long axis
    turns by 90° across focus. ``spherical``: a disk with a bright rim on one side of focus
    and a soft, wider Gaussian on the other, as spherical aberration makes them.
    """
    if radius < 0.25:
        return np.ones((1, 1))
    if kind == "spherical":
        return psf("airy", radius) if side > 0 else psf("gaussian", 1.3 * radius)
    soft = kind in ("gaussian", "astigmatic")
    half = int(np.ceil(radius * (4.2 if kind == "astigmatic" else 3 if soft else 1.5))) + 1
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    r = np.hypot(yy, xx)
    if kind == "gaussian":
        kernel = np.exp(-0.5 * (r / (0.6 * radius)) ** 2)
    elif kind == "astigmatic":
        stretch = 1.4**side
        sigma_y, sigma_x = 0.6 * radius * stretch, 0.6 * radius / stretch
        kernel = np.exp(-0.5 * ((yy / sigma_y) ** 2 + (xx / sigma_x) ** 2))
    elif kind == "disk":
        kernel = np.clip(radius + 0.5 - r, 0, 1)
    else:  # Airy-like: a disk whose rim is brighter, as in a defocused widefield PSF
        kernel = np.clip(radius + 0.5 - r, 0, 1) * (
            1 + 1.5 * np.exp(-0.5 * ((r - radius) / 0.8) ** 2)
        )
    return kernel / kernel.sum()


def _blurred(image: np.ndarray, kind: str, radius: float, side: int = 1) -> np.ndarray:
    kernel = psf(kind, radius, side)
    if kernel.size == 1:
        return image
    pad = kernel.shape[0] // 2
    if image.ndim == 3:
        padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        kernel = kernel[..., None]
    else:
        padded = np.pad(image, pad, mode="reflect")
    out = signal.fftconvolve(padded, kernel, mode="valid", axes=(0, 1))
    return out.astype(np.float32)


@dataclass(frozen=True)
class Optics:
    """How a plane sees the specimen at a given defocus (see :func:`render_stack`)."""

    psf_kind: str
    blur_per_slice: float
    depth_of_field: float
    halo: float

    def blurred(self, image: np.ndarray, slices: float) -> np.ndarray:
        """``image`` through the PSF of ``slices`` of defocus (signed: positive, the object
        lies beyond the plane)."""
        return _blurred(image, self.psf_kind, self._radius(slices), 1 if slices >= 0 else -1)

    def defocused(self, image: np.ndarray, slices: float) -> np.ndarray:
        """:meth:`blurred`, with the halo's fringes: a weak phase edge out of focus gets a
        bright and a dark fringe, which swap across focus."""
        out = self.blurred(image, slices)
        radius = self._radius(slices)
        if self.halo and radius >= 0.25:
            side = 1 if slices >= 0 else -1
            out = out + (self.halo * side) * (out - _blurred(image, "gaussian", 2 * radius))
        return out

    def _radius(self, slices: float) -> float:
        return self.blur_per_slice * max(abs(slices) - self.depth_of_field, 0.0)


def render_stack(
    sharp: np.ndarray,
    depth: np.ndarray,
    n_slices: int,
    *,
    rng: np.random.Generator,
    psf_kind: str = "gaussian",
    blur_per_slice: float = 1.5,
    depth_of_field: float = 0.0,
    photons: float = 2000.0,
    read_noise: float = 0.005,
    bits: int = 16,
    drift: float = 0.0,
    levels_per_slice: int = 4,
    occlusion: bool = False,
    halo: float = 0.0,
    optics: Microscope | None = None,
    relief: np.ndarray | None = None,
    magnification: float = 0.0,
    lateral_drift: float = 0.0,
    illumination: float = 0.0,
    bleaching: float = 0.0,
) -> RenderedStack:
    """Render ``n_slices`` planes of ``sharp`` (in [0, 1]) at the depths of ``depth``.

    ``psf_kind``: one of :data:`.optics.PSFS` or :data:`.optics.ABERRATED_PSFS`.
    ``occlusion``: render by layers of equal depth instead of gathering, nearest (smallest
    depth) first, each layer's defocused light composited over what lies behind it through its
    defocused coverage, so a near object out of focus spreads over a far one in focus and
    veils it. ``halo``: the
    strength of the fringes defocus gives a brightfield specimen's edges (0.3–1 is visible).

    ``optics``: physical optics (:mod:`.optics`) instead of a PSF of intensities (the PSF
    arguments are then unused): :class:`~.optics.Brightfield` or :class:`~.optics.Reflected`
    wave optics, where ``sharp`` is the specimen's intensity transmittance or reflectance and
    ``relief`` (Y, X) its optical path difference or surface height in µm; or
    :class:`~.optics.Fluorescence`, where ``sharp`` is the emission density and every layer's
    light adds to every plane. The truth is then each pixel as the plane through its own depth
    sees it (diffraction-limited; with fluorescence, with the haze no fusion can remove).

    Acquisition: ``magnification``, the relative change in magnification per slice (focus
    breathing, about the middle plane); ``lateral_drift``, the stage's random walk in px per
    slice (the truth in the planes' mean position); ``illumination``, a smooth unevenness of
    the illumination (share of the mean, at the field's corners) that wanders from plane to
    plane; ``bleaching``, the share of the fluorescence lost per plane. ``drift`` is the
    brightness drift between slices (a random walk of gains).
    """
    grid = np.round(depth * levels_per_slice).astype(int)
    if optics is not None:
        if occlusion:
            raise ValueError("occlusion is a model of intensity PSFs: give it without optics")
        stack, truth = _physical(optics, sharp, relief, grid, n_slices, levels_per_slice)
    else:
        blur = Optics(psf_kind, blur_per_slice, depth_of_field, halo)
        if occlusion:
            planes = [_layered(sharp, grid, k, levels_per_slice, blur) for k in range(n_slices)]
        else:
            seen: dict[int, np.ndarray] = {}  # defocused images, shared by the planes
            planes = [
                _gathered(sharp, grid, k, levels_per_slice, blur, seen) for k in range(n_slices)
            ]
        stack, truth = np.stack(planes), sharp
    if drift:
        gains = np.cumprod(1 + rng.normal(0, drift, n_slices)).astype(np.float32)
        stack *= gains.reshape(-1, *([1] * sharp.ndim))
    stack = acquired(stack, rng, magnification, lateral_drift, illumination, bleaching)
    stack = rng.poisson(np.clip(stack, 0, None) * photons) / photons
    stack = stack + rng.normal(0, read_noise, stack.shape)
    full = 2**bits - 1
    level = full * rng.uniform(0.6, 0.95)
    dtype = np.uint8 if bits <= 8 else np.uint16
    quantised = np.clip(np.rint(stack * level), 0, full).astype(dtype)
    detail = ndimage.gaussian_gradient_magnitude(truth if truth.ndim == 2 else truth.mean(-1), 1.0)
    if relief is not None and isinstance(optics, Brightfield):
        # A transparent specimen shows its depth by its phase out of focus: count phase
        # gradients as detail (0.04 rad per px as much as 4 % contrast).
        phase = 2 * np.pi * optics.passes * relief / optics.wavelength
        detail = np.maximum(detail, ndimage.gaussian_gradient_magnitude(phase, 1.0))
    textured = ndimage.maximum_filter(detail, 5) > 0.04
    return RenderedStack(
        stack=quantised,
        truth=(truth * level).astype(np.float32),
        depth=depth.astype(np.float32),
        textured=textured,
    )


def _physical(
    optics: Microscope,
    sharp: np.ndarray,
    relief: np.ndarray | None,
    grid: np.ndarray,
    n_slices: int,
    levels: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The planes and the truth (each pixel as the plane at its own depth sees it) through
    physical optics."""
    planes = np.arange(n_slices) * levels
    if isinstance(optics, Fluorescence):
        images = fluorescence_images(optics, sharp, grid, levels, np.union1d(planes, grid))
        return np.stack([images[p] for p in planes]), _picked(images, grid)
    offsets = grid[None] - planes[:, None, None]
    images = optics.images(sharp, relief, np.union1d(offsets, [0]), levels)
    return np.stack([_picked(images, o) for o in offsets]), images[0]


def _picked(images: dict[int, np.ndarray], keys: np.ndarray) -> np.ndarray:
    """Each pixel from the image its key names."""
    out = np.empty_like(images[int(keys.flat[0])])
    for key in np.unique(keys):
        mask = keys == key
        out[mask] = images[int(key)][mask]
    return out


def _gathered(
    sharp: np.ndarray,
    grid: np.ndarray,
    k: int,
    levels: int,
    optics: Optics,
    seen: dict[int, np.ndarray],
) -> np.ndarray:
    """Plane ``k``: each pixel from the image blurred by its own defocus (``seen`` keeps each
    defocused image for the next planes)."""
    plane = np.zeros_like(sharp, dtype=np.float32)
    offsets = grid - k * levels
    # Symmetric PSFs without fringes look the same on both sides of focus: blur once per |offset|.
    symmetric = optics.psf_kind in PSFS and not optics.halo
    keys = np.abs(offsets) if symmetric else offsets
    for key in np.unique(keys):
        if key not in seen:
            seen[key] = optics.defocused(sharp, key / levels)
        mask = keys == key
        plane[mask] = seen[key][mask]
    return plane


def _layered(
    sharp: np.ndarray, grid: np.ndarray, k: int, levels: int, optics: Optics
) -> np.ndarray:
    """Plane ``k`` composited from layers of equal depth, nearest first (see render_stack):
    each layer adds its defocused light where what lies before it lets light through, and
    takes its defocused coverage out of that for the layers behind it. A layer is taken to go
    on behind everything nearer, so a near object out of focus lets the far one show through
    its blurred rim instead of a dark gap."""
    plane = np.zeros_like(sharp, dtype=np.float32)
    through = np.ones(grid.shape, np.float32)
    for layer in np.unique(grid):
        alpha = (grid <= layer).astype(np.float32)
        slices = (layer - k * levels) / levels
        spread = alpha[..., None] * sharp if sharp.ndim == 3 else alpha * sharp
        plane += optics.defocused(spread, slices) * (
            through[..., None] if sharp.ndim == 3 else through
        )
        through *= 1 - optics.blurred(alpha, slices).clip(0, 1)  # fringes are the specimen's only
    return plane


def random_stack(
    rng: np.random.Generator,
    shape: tuple[int, int] = (128, 128),
    n_slices: int | None = None,
    *,
    images: tuple[str, ...] = TRAIN_IMAGES,
    rgb: bool | None = None,
    slice_counts: tuple[int, ...] = SLICE_COUNTS,
    blur_range: tuple[float, float] = BLUR_RANGE,
    depth_kinds: tuple[str, ...] = DEPTH_KINDS,
    mix: str = DEFAULT_MIX,
) -> RenderedStack:
    """A stack with every rendering parameter drawn from the range the network must handle:
    its optics a kind of the training ``mix`` (:data:`.mix.MIXES`), drawn by share."""
    n = int(n_slices or rng.choice(slice_counts))
    rgb = bool(rng.random() < 0.3) if rgb is None else rgb
    kind = kind_of(rng, mix)
    sharp, relief = specimen(kind["specimen"], rng, shape, images, rgb)
    depth = depth_map(rng, shape, n, depth_kinds)
    values = {k: draw(rng, spec, n, blur_range) for k, spec in kind.items() if k not in SETUP}
    return render_stack(sharp, depth, n, rng=rng, relief=relief, **optics_of(kind, values, rgb))


def demo_stack(
    n_slices: int = 8,
    size: int = 128,
    *,
    seed: int = 0,
    rgb: bool = False,
    bits: int = 16,
    photons: float = 3000.0,
) -> RenderedStack:
    """A reproducible stained specimen on a tilted, stepped surface, for tests and samples."""
    rng = np.random.default_rng(seed)
    img = bundled_image("immunohistochemistry")  # 512 × 512 RGB
    if size + 100 > img.shape[0]:
        scale = (size + 100) / img.shape[0]
        img = ndimage.zoom(img, (scale, scale, 1), order=1)
    sharp = img[100 : 100 + size, 100 : 100 + size]
    sharp = sharp if rgb else sharp @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    depth = depth_map(rng, (size, size), n_slices)
    return render_stack(
        sharp.astype(np.float32),
        depth,
        n_slices,
        rng=rng,
        blur_per_slice=2.0,
        photons=photons,
        bits=bits,
    )
