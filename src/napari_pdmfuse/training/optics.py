"""Physical microscope optics for the renderer: brightfield and reflected light as partially
coherent wave optics, and widefield fluorescence through a Gibson–Lanni or vectorial PSF.

The PSF models of :mod:`.rendering` blur intensities, which cannot make the effects that most
mislead a focus measure in real stacks: a transparent (phase) specimen nearly vanishes in focus
and shows up, with reversed contrast on either side, out of focus; edges ring with halos; and in
fluorescence every out-of-focus layer adds its light as haze over what lies in focus, with a
PSF that differs above and below focus where the refractive indices mismatch. These classes
make them from the physics, at a cost that keeps rendering a training pool within minutes:

- :class:`Brightfield`: the specimen a complex transmittance (amplitude from the sharp image's
  intensity, phase from its relief), defocused by angular-spectrum propagation and imaged
  through the objective's pupil, under a condenser aperture sampled as an incoherent sum of
  tilted plane waves. :class:`Reflected` is the same with epi-illumination: the relief is a
  surface height and its phase 4πh/λ.
- :class:`Fluorescence`: each layer of equal depth emits, and every plane sums every layer's
  light through the 3-D PSF of ``psfmodels`` (Aguet's vectorial model or Gibson–Lanni's
  scalar one), so haze adds and nothing behind is hidden.

Depth is in slices of the stack (:func:`.rendering.render_stack` quantises it to
``levels`` per slice); every distance here is in µm at the specimen.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

#: Intensity PSFs of defocus (:func:`.rendering.psf`).
PSFS = ("gaussian", "disk", "airy")
#: Intensity PSFs that differ above and below focus, as aberrated optics' do.
ABERRATED_PSFS = ("astigmatic", "spherical")
#: Wavelengths (µm) of the red, green and blue channels of an RGB camera.
RGB_WAVELENGTHS = (0.61, 0.54, 0.47)
_GOLDEN = np.pi * (3 - np.sqrt(5))
#: Most pixels a fluorescence PSF reaches (its light beyond is kept, nearer); wave optics pad
#: the field by up to half as much (beyond, the FFT's wrap-around brings in reflected content).
MAX_SPREAD = 64


def z_step_for_blur(
    blur_per_slice: float, na: float, pixel: float, medium: float, wavelength: float = 0.55
) -> float:
    """The plane spacing (µm) at which geometric defocus blurs by ``blur_per_slice`` px
    (blur radius = defocus × tan of the objective's half-angle in ``medium``), and at least
    ¾ of the depth of field λn/NA², which near focus the geometric blur underestimates: a
    focus series is rarely spaced finer."""
    geometric = blur_per_slice * pixel * np.sqrt(medium**2 - na**2) / na
    return float(max(geometric, 0.75 * wavelength * medium / na**2))


@dataclass(frozen=True)
class Brightfield:
    """Transmitted-light brightfield: Köhler illumination through a condenser aperture.

    ``na``: the objective's numerical aperture; ``condenser``: the condenser's NA as a share
    of it (σ; small is nearly coherent, with strong fringes; 1 is a fully open condenser);
    ``wavelength``, ``pixel`` and ``z_step`` in µm at the specimen (RGB: the channels at
    :data:`RGB_WAVELENGTHS`); ``medium``: the refractive index defocus happens in;
    ``sources``: tilted plane waves the condenser aperture is sampled by (an incoherent sum).
    """

    na: float = 0.4
    condenser: float = 0.6
    wavelength: float = 0.55
    pixel: float = 0.4
    z_step: float = 2.0
    medium: float = 1.0
    sources: int = 7
    #: Times the light crosses the relief (reflected light: twice, phase 4πh/λ).
    passes: ClassVar[int] = 1

    def images(
        self, sharp: np.ndarray, relief: np.ndarray | None, offsets: np.ndarray, levels: int
    ) -> dict[int, np.ndarray]:
        """The intensity images (float32, ``sharp``'s shape) of the specimen at each defocus
        of ``offsets`` (integers, ``levels`` per slice, signed: positive, the specimen lies
        beyond the plane).

        ``sharp`` in [0, 1] is the specimen's intensity transmittance (or reflectance);
        ``relief`` (Y, X) its optical path difference in µm (reflected: surface height)."""
        channels = sharp[..., None] if sharp.ndim == 2 else sharp
        waves = (self.wavelength,) if sharp.ndim == 2 else RGB_WAVELENGTHS
        out = {int(o): np.empty(channels.shape, np.float32) for o in offsets}
        pad = self._pad(float(np.abs(offsets).max(initial=0)) / levels)
        h, w = sharp.shape[:2]
        shape = tuple(sfft.next_fast_len(s + 2 * pad) for s in (h, w))
        ends = [(pad, s - n - pad) for s, n in zip(shape, (h, w), strict=True)]
        for c, wave in enumerate(waves):
            amplitude = np.sqrt(np.clip(channels[..., c], 0, None))
            phase = 0.0 if relief is None else 2 * np.pi * self.passes * relief / wave
            field = np.pad(amplitude * np.exp(1j * phase), ends, mode="reflect")
            spectrum = sfft.fft2(field.astype(np.complex64), workers=1)
            pupils, kz = self._pupils(shape, wave)
            passed = spectrum * pupils
            # Defocus by each offset in turn: the last offset's field times one step's
            # propagator (in single precision the phase drifts by < 1e-4 rad over 100 steps).
            low = min(out)
            step = np.exp(-2j * np.pi * (self.z_step / levels) * kz).astype(np.complex64)
            defocus = passed * np.exp(-2j * np.pi * (low * self.z_step / levels) * kz)
            defocus = defocus.astype(np.complex64)
            for o in range(low, max(out) + 1):
                if o in out:
                    fields = sfft.ifft2(defocus, workers=1)
                    total = (fields.real**2 + fields.imag**2).mean(0)  # equal-area sources
                    out[o][..., c] = total[pad : pad + h, pad : pad + w]
                defocus *= step
        return {o: v[..., 0] if sharp.ndim == 2 else v for o, v in out.items()}

    @property
    def _source_count(self) -> int:
        return 1 if self.condenser <= 0 else max(self.sources, 1)

    def _pupils(self, shape: tuple[int, int], wave: float) -> tuple[np.ndarray, np.ndarray]:
        """Per source point: the pupil shifted by its tilt, and the axial wavenumber (cycles
        per µm, less the source's own) that angular-spectrum propagation advances by."""
        return _pupils(shape, wave, self.pixel, self.na, self.condenser, self.medium,
                       self._source_count)  # fmt: skip

    def _pad(self, slices: float) -> int:
        """Margin that keeps the wrap-around of the FFT out of the field: the widest blur."""
        blur = slices * self.z_step * self.na / np.sqrt(self.medium**2 - self.na**2)
        return int(min(blur / self.pixel + 8, MAX_SPREAD // 2))


@dataclass(frozen=True)
class Reflected(Brightfield):
    """Reflected-light brightfield (epi-illumination through the objective, nearly coherent):
    ``relief`` is the surface's height in µm, seen as phase 4πh/λ."""

    condenser: float = 0.3
    passes: ClassVar[int] = 2


@lru_cache(maxsize=16)
def _pupils(
    shape: tuple[int, int],
    wave: float,
    pixel: float,
    na: float,
    condenser: float,
    medium: float,
    count: int,
) -> tuple[np.ndarray, np.ndarray]:
    fy = sfft.fftfreq(shape[0], pixel)[:, None]
    fx = sfft.fftfreq(shape[1], pixel)[None, :]
    # Source points on a sunflower spiral: equal areas of the condenser's disk.
    i = np.arange(count)
    radius = condenser * na / wave * np.sqrt((i + 0.5) / count) if count > 1 else np.zeros(1)
    sy, sx = radius * np.sin(i * _GOLDEN), radius * np.cos(i * _GOLDEN)
    ky, kx = fy + sy[:, None, None], fx + sx[:, None, None]
    rho2 = ky**2 + kx**2
    pupils = (rho2 <= (na / wave) ** 2).astype(np.complex64)
    k2 = (medium / wave) ** 2
    kz = np.sqrt(np.clip(k2 - rho2, 0, None)) - np.sqrt(k2 - (sy**2 + sx**2))[:, None, None]
    return pupils, kz.astype(np.float32)


@dataclass(frozen=True)
class Fluorescence:
    """Widefield epifluorescence: every layer of the specimen emits, every plane sums all the
    layers' light through the 3-D PSF of ``psfmodels`` (``model``: "vectorial", Aguet et al.
    2009, or "scalar", Gibson and Lanni 1991).

    ``na``, ``immersion`` (the immersion medium's index, as designed) and ``sample`` (the
    specimen's index): where they differ, spherical aberration grows with ``depth``, the
    emitters' distance (µm) beyond the coverslip, and the PSF differs above and below focus.
    ``wavelength`` (emission), ``pixel`` and ``z_step`` in µm at the specimen."""

    na: float = 1.0
    immersion: float = 1.33
    sample: float = 1.33
    depth: float = 0.0
    wavelength: float = 0.52
    pixel: float = 0.2
    z_step: float = 0.5
    model: str = "vectorial"

    def psf(self, offsets: np.ndarray) -> np.ndarray:
        """The PSF (len(offsets), S, S) float32, each plane summing to 1, for emitters
        ``offsets`` slices beyond the plane in focus (signed), out to :data:`MAX_SPREAD` px."""
        offsets = np.asarray(offsets, float)
        half = int(min(np.ceil(self.spread(float(np.abs(offsets).max(initial=0)))), MAX_SPREAD))
        return _psf(self, tuple(offsets.round(6)), half)

    def spread(self, slices: float | np.ndarray) -> float | np.ndarray:
        """How far (px) the PSF reaches at a defocus of ``slices``: the geometric blur's
        radius and three Airy radii."""
        tangent = self.na / np.sqrt(self.sample**2 - min(self.na, 0.99 * self.sample) ** 2)
        return (np.abs(slices) * self.z_step * tangent + 3 * self.wavelength) / self.pixel


#: Samples of a PSF's half-width that ``psfmodels`` computes; wider planes it samples coarser,
#: and they are interpolated (a defocused PSF is broad and smooth).
PSF_SAMPLES = 16


@lru_cache(maxsize=8)
def _psf(optics: Fluorescence, offsets: tuple[float, ...], half: int) -> np.ndarray:
    # Offsets count from the best focus, the focal plane of the brightest peak: with a
    # refractive-index mismatch it lies away from the emitter's nominal depth (focal shift).
    focus = _best_focus(optics) - np.asarray(offsets) * optics.z_step
    reach = np.minimum(optics.spread(np.asarray(offsets)), half)
    coarse = np.maximum(np.ceil(reach / PSF_SAMPLES), 1).astype(int)
    psf = np.empty((len(offsets), 2 * half + 1, 2 * half + 1), np.float32)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(float)
    for factor in np.unique(coarse):
        chosen = coarse == factor
        samples = int(np.ceil(half / factor))
        planes = _psfmodels(optics, focus[chosen], 2 * samples + 1, optics.pixel * factor)
        if factor == 1:
            psf[chosen] = planes
            continue
        where = [yy / factor + samples, xx / factor + samples]
        psf[chosen] = [ndimage.map_coordinates(p, where, order=1) for p in planes]
    return psf / psf.sum(axis=(1, 2), keepdims=True)


@lru_cache(maxsize=64)
def _best_focus(optics: Fluorescence) -> float:
    """The focal plane position (µm beyond the coverslip) of the PSF's brightest peak."""
    depth_of_field = optics.wavelength * optics.sample / optics.na**2
    focus = optics.depth + np.linspace(-1, 1, 81) * max(0.3 * optics.depth, 2 * depth_of_field)
    peaks = _psfmodels(optics, focus, 3, optics.pixel)[:, 1, 1]
    return float(focus[np.argmax(peaks)])


def _psfmodels(optics: Fluorescence, focus: np.ndarray, side: int, pixel: float) -> np.ndarray:
    try:
        import psfmodels
    except ImportError:
        raise ModuleNotFoundError(
            "Fluorescence optics need psfmodels for their PSFs: pip install 'napari-pdmfuse[train]'"
        ) from None

    return psfmodels.make_psf(
        focus,
        side,
        dxy=pixel,
        oversample_factor=1,
        pz=optics.depth,
        NA=optics.na,
        wvl=optics.wavelength,
        ns=optics.sample,
        ni=optics.immersion,
        ni0=optics.immersion,
        model=optics.model,
        normalize=False,
    ).astype(np.float32)


def fluorescence_images(
    optics: Fluorescence, sharp: np.ndarray, grid: np.ndarray, levels: int, at: np.ndarray
) -> dict[int, np.ndarray]:
    """Widefield images of a fluorescent specimen whose pixels lie at the depths ``grid``
    (integer levels, ``levels`` per slice), each in focus at a level of ``at``: every layer of
    equal depth adds its light through the PSF of its distance to the plane. ``sharp`` is the
    emission density."""
    layers = np.unique(grid)
    span = np.arange(min(layers.min(), at.min()), max(layers.max(), at.max()) + 1)
    count = len(span)
    kernel = optics.psf(np.arange(-(count - 1), count) / levels)  # every layer − plane offset
    half = kernel.shape[-1] // 2
    h, w = grid.shape
    shape = tuple(sfft.next_fast_len(s + 2 * half, real=True) for s in (h, w))
    ends = [(half, s - n - half) for s, n in zip(shape, (h, w), strict=True)]
    channels = sharp[..., None] if sharp.ndim == 2 else sharp
    channels = np.pad(channels, [*ends, (0, 0)], mode="reflect")
    padded_grid = np.pad(grid, ends, mode="reflect")
    # Transfer function of each offset: the kernel zero-padded, its centre moved to the origin.
    kernel = np.pad(kernel, [(0, 0), *((0, s - kernel.shape[-1]) for s in shape)])
    otf = sfft.rfft2(np.roll(kernel, (-half, -half), axis=(1, 2)), workers=1)
    emission = np.zeros((count, *otf.shape[1:], channels.shape[-1]), np.complex64)
    for layer in layers:
        layer_light = channels * (padded_grid == layer)[..., None]
        emission[layer - span[0]] = sfft.rfft2(layer_light, axes=(0, 1), workers=1)
    # The image at level m is the sum over layers l of otf[l − m] · emission[l]: a convolution
    # along z with the offsets reversed, which one FFT along z does for every level at once.
    n = sfft.next_fast_len(2 * count)
    product = (
        sfft.fft(emission, n, axis=0, workers=1)
        * sfft.fft(otf[::-1].astype(np.complex64), n, axis=0, workers=1)[..., None]
    )
    images = sfft.ifft(product, axis=0, workers=1)[count - 1 : 2 * count - 1]
    out = {}
    for level in np.unique(at):
        image = sfft.irfft2(images[level - span[0]], shape, axes=(0, 1), workers=1)
        image = image[half : half + h, half : half + w].astype(np.float32)
        out[int(level)] = image[..., 0] if sharp.ndim == 2 else image
    return out


#: Physical optics :func:`.rendering.render_stack` takes (a Reflected is a Brightfield).
Microscope = Brightfield | Fluorescence


def acquired(
    stack: np.ndarray,
    rng: np.random.Generator,
    magnification: float = 0.0,
    lateral_drift: float = 0.0,
    illumination: float = 0.0,
    bleaching: float = 0.0,
) -> np.ndarray:
    """The planes as a camera records them through a moving, breathing, unevenly lit focus
    series (see :func:`render_stack`); draws from ``rng`` only for the effects asked for."""
    n = stack.shape[0]
    rgb = stack.ndim == 4
    if magnification or lateral_drift:
        scales = 1 + magnification * (np.arange(n) - (n - 1) / 2)
        walk = np.cumsum(rng.normal(0, lateral_drift, (n, 2)), 0) if lateral_drift else 0
        shifts = np.zeros((n, 2)) + walk
        shifts -= shifts.mean(0)
        centre = (np.array(stack.shape[1:3]) - 1) / 2
        for k in range(n):
            # Plane k sees the specimen point p at centre + scale·(p − centre) + shift.
            matrix = np.diag([1 / scales[k]] * 2 + [1] * rgb)
            offset = np.concatenate([centre - (centre + shifts[k]) / scales[k], [0] * rgb])
            stack[k] = ndimage.affine_transform(stack[k], matrix, offset, order=1, mode="reflect")
    if illumination:
        h, w = stack.shape[1:3]
        yy, xx = np.mgrid[-1 : 1 : h * 1j, -1 : 1 : w * 1j]
        terms = np.stack([yy, xx, yy * xx, yy**2 - 1 / 3, xx**2 - 1 / 3])
        walk = np.cumsum(rng.normal(0, 1, (n, len(terms))), 0) / np.sqrt(n)
        fields = 1 + illumination * (walk @ terms.reshape(len(terms), -1)).reshape(n, h, w) / 2
        fields = np.clip(fields, 0.1, None).astype(np.float32)
        stack *= fields[..., None] if rgb else fields
    if bleaching:
        stack *= ((1 - bleaching) ** np.arange(n)).reshape(-1, *([1] * (stack.ndim - 1)))
    return stack
