"""A focus map as a 3-D surface: the specimen's relief, coloured with the fused image.

Qt-free and napari-free: :func:`height_surface` returns the ``(vertices, faces, colors)`` a napari
``Surface`` layer takes (``Surface((vertices, faces), vertex_colors=colors)``), so the geometry
can be tested, scripted or exported without a viewer.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: Most vertices along either side of the surface; a 256 × 256 grid renders instantly.
MAX_SIDE = 256

#: Gaussian smoothing of the focus map before sampling, in pixels of the full image.
SIGMA = 2.0

#: Rec. 709 luma weights, for the brightness of multichannel images.
_LUMA = np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)


def auto_step(shape_yx: tuple[int, int], max_side: int = MAX_SIDE) -> int:
    """Sampling step that keeps at most ``max_side`` vertices along the longer side."""
    return max(1, math.ceil(max(shape_yx) / max_side))


def smooth_focus(
    focus_map: np.ndarray, confidence: np.ndarray | None, sigma: float = SIGMA
) -> np.ndarray:
    """Confidence-weighted Gaussian smoothing: smooth(focus·conf) / smooth(conf).

    Pixels with low confidence (background, flat areas) take the height of their confident
    neighbours instead of the noise of their own focus estimate; where no pixel nearby is
    confident, the plain smoothed focus map is used.
    """
    focus = np.asarray(focus_map, dtype=np.float32)
    smooth = ndimage.gaussian_filter(focus, sigma, mode="nearest")
    if confidence is None:
        return smooth
    weight = np.clip(np.asarray(confidence, dtype=np.float32), 0.0, 1.0)
    num = ndimage.gaussian_filter(focus * weight, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    # Blend towards the unweighted value as the local confidence vanishes: no 0/0 anywhere.
    eps = np.float32(1e-3)
    weighted = num / np.maximum(den, eps)
    return np.where(den > eps, weighted, smooth).astype(np.float32)


def colours(
    image: np.ndarray,
    *,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
) -> np.ndarray:
    """RGBA float colours in [0, 1] for the pixels of a grey, RGB(A) or (…, C) image.

    RGB(A) images keep their colours; grey and multichannel images become grey levels (the
    mean of the channels). Intensities are scaled by ``contrast_limits``, by default the 0.5–99.5
    percentile range of the values.
    """
    data = np.asarray(image, dtype=np.float32)
    if rgb is None:
        rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
    if rgb:
        colour = data[..., :3]
    else:
        grey = data.mean(axis=-1) if data.ndim == 3 else data
        colour = np.repeat(grey[..., None], 3, axis=-1)
    if contrast_limits is None:
        low, high = (float(v) for v in np.percentile(colour, (0.5, 99.5)))
    else:
        low, high = (float(v) for v in contrast_limits)
    span = high - low if high > low else 1.0
    colour = np.clip((colour - low) / span, 0.0, 1.0)
    alpha = np.ones((*colour.shape[:-1], 1), dtype=np.float32)
    return np.concatenate([colour, alpha], axis=-1).astype(np.float32)


def grid_faces(n_rows: int, n_cols: int) -> np.ndarray:
    """Two triangles per cell of an ``n_rows × n_cols`` vertex grid numbered row by row."""
    index = np.arange(n_rows * n_cols, dtype=np.int32).reshape(n_rows, n_cols)
    a = index[:-1, :-1].ravel()  # top left
    b = index[:-1, 1:].ravel()  # top right
    c = index[1:, :-1].ravel()  # bottom left
    d = index[1:, 1:].ravel()  # bottom right
    return np.concatenate([np.stack([a, c, b], axis=1), np.stack([b, c, d], axis=1)])


def height_surface(
    focus_map: np.ndarray,
    fused: np.ndarray,
    confidence: np.ndarray | None = None,
    step: int | None = None,
    z_scale: float = 1.0,
    yx_scale: tuple[float, float] = (1.0, 1.0),
    *,
    sigma: float = SIGMA,
    rgb: bool | None = None,
    contrast_limits: tuple[float, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertices, faces and per-vertex colours of the surface the focus map describes.

    ``focus_map`` (Y, X) gives the height of every pixel: it is smoothed (confidence-weighted,
    Gaussian ``sigma`` px, widened to ``step / 2`` px so sampling does not alias), sampled every
    ``step`` pixels (default: at most :data:`MAX_SIDE` vertices a side) and multiplied by
    ``z_scale``. Vertices are (z, y, x) in world units: z = focus × ``z_scale``,
    y = row × ``yx_scale[0]``, x = column × ``yx_scale[1]``, one per sampled pixel, numbered row
    by row. Faces split each grid cell into two triangles; ``colors`` is (N, 4) RGBA in [0, 1]
    taken from ``fused`` (Y, X[, C]) at the sampled pixels.
    """
    focus = np.asarray(focus_map)
    if focus.ndim != 2:
        raise ValueError(f"The focus map must be 2-D (Y, X), not of shape {focus.shape}.")
    image = np.asarray(fused)
    if image.shape[:2] != focus.shape:
        raise ValueError(
            f"The fused image of shape {image.shape} does not match the focus map {focus.shape}."
        )
    if confidence is not None and np.shape(confidence) != focus.shape:
        raise ValueError(
            f"The confidence map of shape {np.shape(confidence)} does not match the focus map "
            f"{focus.shape}."
        )
    if step is None:
        step = auto_step(focus.shape)
    step = max(1, int(step))
    height = smooth_focus(focus, confidence, max(sigma, step / 2))
    rows = np.arange(0, focus.shape[0], step)
    cols = np.arange(0, focus.shape[1], step)
    z = height[np.ix_(rows, cols)] * np.float32(z_scale)
    yy, xx = np.meshgrid(rows * float(yx_scale[0]), cols * float(yx_scale[1]), indexing="ij")
    vertices = np.stack([z.ravel(), yy.ravel(), xx.ravel()], axis=1).astype(np.float32)
    faces = grid_faces(len(rows), len(cols))
    sampled = image[np.ix_(rows, cols)]
    colors = colours(sampled, rgb=rgb, contrast_limits=contrast_limits).reshape(-1, 4)
    return vertices, faces, colors
