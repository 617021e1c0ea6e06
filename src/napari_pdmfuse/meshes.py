"""3-D models of a fusion: the focus map as a relief, textured with the fused image.

A model is written as glTF binary (``.glb``: any web or desktop 3-D viewer, the surface with
the fused image as its texture), PLY (``.ply``: MeshLab, CloudCompare, Blender; the texture as
a PNG beside it) or STL (``.stl``: slicers for 3-D printing; a closed solid on a flat base, no
colour), by trimesh. Coordinates are in micrometres when the pixel size and the Z step are
known, else in pixels across and slices up; glTF models have +Y up (the relief), PLY and STL
+Z up, and in every format the image reads the right way round seen from above.

A result of any size becomes a model of bounded size: :class:`ReliefSampler` keeps block means
of the maps as tiles arrive (at most :data:`TEXTURE_SIDE` texels a side for the texture,
:data:`GEOMETRY_SIDE` for the heights), and the surface is the height view's
(:func:`~napari_pdmfuse.viewer.height_view.height_surface`: confidence-weighted smoothing, at
most :data:`MESH_SIDE` vertices a side, so at most about half a million triangles).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, OutputError, PdmFuseWarning
from .viewer.height_view import auto_step, colours, height_surface

#: What each model format is for, by suffix.
MESH_FORMATS = {
    ".glb": "glTF binary, textured",
    ".ply": "PLY, textured (PNG beside it)",
    ".stl": "STL, a closed solid for printing",
}

#: Most vertices along the longer side of a model (about 2 × 511² triangles at most).
MESH_SIDE = 512

#: Most texels along the longer side of the texture, and of the height map the surface is
#: sampled from (which the surface then smooths and samples every few pixels).
TEXTURE_SIDE = 2048
GEOMETRY_SIDE = 2 * MESH_SIDE

#: Thickness of a printed model's base, as a fraction of its longer horizontal side.
BASE_FRACTION = 0.02


def mesh_format(path: str | Path) -> str:
    """The model format a file name asks for (its suffix), refused with a sentence if none."""
    suffix = Path(path).suffix.lower()
    if suffix not in MESH_FORMATS:
        raise OutputError(
            f"The 3-D model {path} is not named .glb, .ply or .stl; the suffix picks the format "
            "(glTF binary, PLY or STL)."
        )
    return suffix


def texture_path(path: Path) -> Path:
    """The PNG texture written beside a PLY model."""
    return path.with_suffix(".png")


def model_files(path: str | Path) -> list[Path]:
    """Every file a model writes: the model, and a PLY's texture."""
    path = Path(path)
    return [path, texture_path(path)] if mesh_format(path) == ".ply" else [path]


def _blocks(length: int, side: int) -> int:
    """The block size (px) that brings ``length`` within ``side``."""
    return max(1, math.ceil(length / side))


def _block_sums(values: np.ndarray, y0: int, x0: int, block: int, out: np.ndarray) -> None:
    """Add the (h, w[, k]) ``values`` at (y0, x0) into ``out``, one cell per block × block px."""
    height, width = values.shape[:2]
    rows = (y0 + np.arange(height)) // block
    cols = (x0 + np.arange(width)) // block
    n_rows, n_cols = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
    index = ((rows - rows[0])[:, None] * n_cols + (cols - cols[0])[None, :]).ravel()
    where = (slice(int(rows[0]), int(rows[0]) + n_rows), slice(int(cols[0]), int(cols[0]) + n_cols))
    flat = values.reshape(height * width, -1)
    for k in range(flat.shape[1]):
        sums = np.bincount(index, weights=flat[:, k], minlength=n_rows * n_cols)
        target = out[where] if out.ndim == 2 else out[(*where, k)]
        target += sums.reshape(n_rows, n_cols).astype(out.dtype)


@dataclass
class Relief:
    """A result reduced for a model: heights and confidence at ``geometry`` px per cell, the
    image (RGB, or grey) at ``texture`` px per texel, and what the units are."""

    focus: np.ndarray  # (h, w) confidence-weighted block means
    confidence: np.ndarray  # (h, w)
    image: np.ndarray  # (H, W, 3) RGB or (H, W) grey, block means
    geometry: int
    texture: int
    shape_yx: tuple[int, int]
    rgb: bool
    contrast: tuple[float, float] | None = None  # of the image's colours; None: percentiles


class ReliefSampler:
    """Block means of a result's maps and image, filled tile by tile in bounded memory."""

    def __init__(
        self, shape_yx: tuple[int, int], rgb: bool, contrast: tuple[float, float] | None = None
    ) -> None:
        longest = max(shape_yx)
        self.shape_yx, self.rgb, self.contrast = shape_yx, rgb, contrast
        self.texture = _blocks(longest, TEXTURE_SIDE)
        texels = [math.ceil(n / self.texture) for n in shape_yx]
        # Height cells are whole numbers of texels, so the texture's sums make the colours too.
        self.geometry = self.texture * _blocks(max(texels), GEOMETRY_SIDE)
        cells = [math.ceil(n / self.geometry) for n in shape_yx]
        self.image = np.zeros((*texels, 3) if rgb else texels, np.float32)
        self.texel_count = np.zeros(texels, np.float32)
        self.sums = np.zeros((*cells, 4), np.float64)  # focus·confidence, confidence, focus, n

    def add(
        self, rows: slice, cols: slice, fused: np.ndarray, focus: np.ndarray, confidence: Any
    ) -> None:
        """A window of the result: fused (h, w, C) and the maps (h, w), in their final units."""
        y0, x0 = rows.start, cols.start
        image = np.asarray(fused, dtype=np.float32)
        image = image[..., :3] if self.rgb else image.mean(axis=-1)
        _block_sums(image, y0, x0, self.texture, self.image)
        _block_sums(np.ones(image.shape[:2], np.float32), y0, x0, self.texture, self.texel_count)
        focus = np.asarray(focus, dtype=np.float64)
        weight = np.clip(np.asarray(confidence, dtype=np.float64), 0.0, 1.0)
        maps = np.stack([focus * weight, weight, focus, np.ones_like(focus)], axis=-1)
        _block_sums(maps, y0, x0, self.geometry, self.sums)

    def relief(self) -> Relief:
        weighted, weight, plain, count = np.moveaxis(self.sums, -1, 0)
        count = np.maximum(count, 1)
        focus = np.where(weight > 1e-6, weighted / np.maximum(weight, 1e-12), plain / count)
        texels = np.maximum(self.texel_count, 1)
        image = self.image / (texels[..., None] if self.rgb else texels)
        return Relief(
            focus=focus.astype(np.float32),
            confidence=(weight / count).astype(np.float32),
            image=image,
            geometry=self.geometry,
            texture=self.texture,
            shape_yx=self.shape_yx,
            rgb=self.rgb,
            contrast=self.contrast,
        )


@dataclass(frozen=True)
class Units:
    """Micrometres per pixel (y, x) and per focus-map unit, or None where unknown."""

    pixel_size: tuple[float, float] | None
    z_per_unit: float | None

    @property
    def physical(self) -> bool:
        return self.pixel_size is not None and self.z_per_unit is not None

    def describe(self) -> str:
        return "micrometre" if self.physical else "pixels across, slices up"


def _geometry_colours(relief: Relief, factor: int) -> np.ndarray:
    """The image at the height cells' resolution (texels are ``factor`` × ``factor`` per cell)."""
    image = relief.image if relief.rgb else relief.image[..., None]
    height, width = relief.focus.shape
    padded = np.zeros((height * factor, width * factor, image.shape[-1]), np.float32)
    padded[: image.shape[0], : image.shape[1]] = image
    means = padded.reshape(height, factor, width, factor, -1).mean(axis=(1, 3))
    return means if relief.rgb else means[..., 0]


@dataclass
class Surface:
    """A relief's surface: vertices (row, column, height) in model units, faces, the
    texture coordinates (OpenGL's, v up) and the texture as 8-bit RGB."""

    rows: np.ndarray
    cols: np.ndarray
    heights: np.ndarray
    faces: np.ndarray
    uv: np.ndarray
    texture: np.ndarray
    grid: tuple[int, int]  # vertices per column and per row


def surface(relief: Relief, units: Units, exaggeration: float = 1.0) -> Surface:
    """The relief's surface: the height view's geometry, in model units."""
    cell = relief.geometry
    py, px = units.pixel_size if units.physical else (1.0, 1.0)
    z_scale = (units.z_per_unit if units.physical else 1.0) * exaggeration
    step = auto_step(relief.focus.shape, MESH_SIDE)
    vertices, faces, _ = height_surface(
        relief.focus,
        _geometry_colours(relief, cell // relief.texture),
        relief.confidence,
        step=step,
        z_scale=z_scale,
        yx_scale=(cell, cell),
    )
    offset = (cell - 1) / 2  # a cell's centre, in pixels of the result
    rows_px = vertices[:, 1].astype(np.float64) + offset
    cols_px = vertices[:, 2].astype(np.float64) + offset
    texels = relief.image.shape[:2]
    u = (cols_px + 0.5) / (texels[1] * relief.texture)
    v = 1.0 - (rows_px + 0.5) / (texels[0] * relief.texture)
    rgba = colours(relief.image, rgb=relief.rgb, contrast_limits=relief.contrast)
    grid = (len(range(0, relief.focus.shape[0], step)), len(range(0, relief.focus.shape[1], step)))
    return Surface(
        rows=rows_px * py,
        cols=cols_px * px,
        heights=vertices[:, 0].astype(np.float64),
        faces=faces,
        uv=np.stack([u, v], axis=1),
        texture=np.round(rgba[..., :3] * 255).astype(np.uint8),
        grid=grid,
    )


def _solid(shape: Surface) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (x, y, z; +Z up) and faces of the surface closed into a solid on a flat base:
    the surface, walls down from its edges and a bottom facing down, every edge shared by two
    faces, so slicers can print it."""
    top = np.stack([shape.cols, -shape.rows, shape.heights], axis=1)
    span = max(np.ptp(shape.cols), np.ptp(shape.rows), 1e-9)
    base = shape.heights.min() - BASE_FRACTION * span
    bottom = top.copy()
    bottom[:, 2] = base
    n = len(top)
    n_rows, n_cols = shape.grid
    index = np.arange(n).reshape(n_rows, n_cols)
    # The outline, counter-clockwise seen from above: down the left side, along the bottom,
    # up the right side, back along the top.
    ring = np.concatenate([index[:, 0], index[-1, 1:], index[-2::-1, -1], index[0, -2:0:-1]])
    a, b = ring, np.roll(ring, -1)
    walls = np.concatenate([np.stack([a, a + n, b + n], axis=1), np.stack([a, b + n, b], axis=1)])
    faces = np.concatenate([shape.faces, shape.faces[:, ::-1] + n, walls])
    return np.concatenate([top, bottom]), faces


def _header_comments(ply: bytes, comments: list[str]) -> bytes:
    """A PLY with ``comments`` added to its header (after the format line)."""
    head, sep, body = ply.partition(b"end_header\n")
    lines = head.split(b"\n")
    extra = [f"comment {c}".encode() for c in comments]
    return b"\n".join([*lines[:2], *extra, *lines[2:]]) + sep + body


def model_bytes(
    relief: Relief,
    units: Units,
    suffix: str,
    *,
    exaggeration: float = 1.0,
    record: dict[str, str] | None = None,
    texture_name: str = "texture.png",
) -> dict[str, bytes]:
    """The files of a model in format ``suffix``, by role: "model", and "texture" for PLY."""
    import trimesh
    from PIL import Image

    shape = surface(relief, units, exaggeration)
    extras = {"unit": units.describe(), **(record or {})}
    if suffix == ".stl":
        vertices, faces = _solid(shape)
        mesh = trimesh.Trimesh(vertices, faces, process=False)
        if not mesh.is_watertight:
            warnings.warn(
                "The printed model is not watertight: its surface folds over itself; "
                "a slicer may need to repair it.",
                PdmFuseWarning,
                stacklevel=2,
            )
        data = trimesh.exchange.stl.export_stl(mesh)
        title = f"napari-pdmfuse height map; unit: {units.describe()}".encode()[:80]
        return {"model": title.ljust(80, b" ") + data[80:]}
    texture = Image.fromarray(shape.texture)
    material = trimesh.visual.material.SimpleMaterial(image=texture)
    visual = trimesh.visual.TextureVisuals(uv=shape.uv, image=texture, material=material)
    if suffix == ".glb":
        vertices = np.stack([shape.cols, shape.heights, shape.rows], axis=1)  # +Y up
    else:
        vertices = np.stack([shape.cols, -shape.rows, shape.heights], axis=1)  # +Z up
    mesh = trimesh.Trimesh(vertices, shape.faces, visual=visual, process=False)
    if units.physical:
        mesh.units = "micron"
    mesh.metadata.update(extras)
    if suffix == ".glb":
        return {"model": trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh))}
    import io

    png = io.BytesIO()
    texture.save(png, format="PNG")
    ply = trimesh.exchange.ply.export_ply(mesh, encoding="binary")
    lines = (f"{k}: {v}" for k, v in extras.items())
    comments = [f"TextureFile {texture_name}", *(" ".join(line.split()) for line in lines)]
    return {"model": _header_comments(ply, comments), "texture": png.getvalue()}


def write_model(
    path: str | Path,
    relief: Relief,
    units: Units,
    *,
    exaggeration: float = 1.0,
    record: dict[str, str] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write the model (and a PLY's texture) whole or not at all; returns the files written."""
    from .writing.atomic import atomic_files

    path = Path(path)
    suffix = mesh_format(path)
    targets = check_model_outputs(path, [], overwrite=overwrite)
    files = model_bytes(
        relief, units, suffix, exaggeration=exaggeration, record=record,
        texture_name=texture_path(path).name,
    )  # fmt: skip
    with atomic_files(targets, overwrite=overwrite) as temps:
        for temp, role in zip(temps, ("model", "texture"), strict=False):
            temp.write_bytes(files[role])
    return targets


def default_contrast(dtype: Any, rgb: bool) -> tuple[float, float] | None:
    """Colour range of a model's texture: 8-bit RGB as it is, anything else stretched to its
    0.5–99.5 percentiles (None)."""
    return (0.0, 255.0) if rgb and np.dtype(dtype) == np.uint8 else None


def result_relief(
    fused: np.ndarray,
    focus_map: np.ndarray,
    confidence: Any,
    rgb: bool,
    contrast: tuple[float, float] | None = None,
) -> Relief:
    """The relief of a result held in memory: fused (Y, X[, C]) and maps (Y, X)."""
    focus = np.asarray(focus_map)
    if focus.ndim != 2:
        raise InputError(
            f"A 3-D model shows one focus map (Y, X), not one of shape {focus.shape}; fuse one "
            "time point, with the channels combined."
        )
    image = np.asarray(fused)
    if image.ndim == 2:
        image = image[..., None]
    sampler = ReliefSampler(focus.shape, rgb, contrast)
    whole = (slice(0, focus.shape[0]), slice(0, focus.shape[1]))
    weight = np.ones(focus.shape, np.float32) if confidence is None else confidence
    sampler.add(*whole, image, focus, weight)
    return sampler.relief()


def write_mesh(
    path: str | Path,
    result: Any,
    *,
    pixel_size: tuple[float, float] | float | None = None,
    z_step: float | None = None,
    exaggeration: float = 1.0,
    overwrite: bool = False,
) -> list[Path]:
    """Write a 3-D model of a :class:`~napari_pdmfuse.FusionResult` (one focus map); the
    suffix of ``path`` picks the format (.glb, .ply, .stl).

    ``pixel_size`` (µm, one number or (y, x)) and, for a focus map in slices, ``z_step`` (µm
    between planes) put the model in micrometres; without them it is in pixels and slices.
    ``exaggeration`` multiplies the heights. Returns the files written.
    """
    mesh_format(path)
    fused, axes = np.asarray(result.fused), result.axes
    if "C" in axes and not axes.endswith("C"):
        fused = np.moveaxis(fused, axes.index("C"), -1)
    rgb = "S" in axes
    contrast = default_contrast(fused.dtype, rgb)
    relief = result_relief(fused, result.focus_map, result.confidence, rgb, contrast)
    physical = result.focus_unit == "physical"
    units = model_units(pixel_size, 1.0 if physical else z_step)
    record = {"software": "napari-pdmfuse", "method": result.method}
    return write_model(
        path, relief, units, exaggeration=exaggeration, record=record, overwrite=overwrite
    )


def model_units(pixel_size: tuple[float, float] | float | None, z_per_unit: float | None) -> Units:
    """The units of a model from a pixel size (µm; one number or (y, x)) and µm per focus unit."""
    if pixel_size is not None and not isinstance(pixel_size, (tuple, list)):
        pixel_size = (float(pixel_size), float(pixel_size))
    size = None if pixel_size is None else (float(pixel_size[0]), float(pixel_size[1]))
    return Units(size, None if z_per_unit is None else float(z_per_unit))


#: Names a model's files may have (checked by :func:`mesh_format` first).
MODEL_SUFFIXES = (*MESH_FORMATS, ".png")


def check_model_outputs(
    path: str | Path, inputs: list[Path], *, overwrite: bool = False
) -> list[Path]:
    """The files a model will write, checked like every output before any work."""
    from .writing.atomic import check_outputs

    mesh_format(path)
    return check_outputs(model_files(path), inputs, overwrite=overwrite, suffixes=MODEL_SUFFIXES)


class ModelSink:
    """A job's sink that passes every tile on and keeps the relief of the result, for a model
    written once the job is done (:meth:`write`)."""

    def __init__(self, sink: Any, job: Any) -> None:
        from .outputs import fusion_record

        image = job.image
        if image.n_times is not None or "C" in job.map_axes:
            raise InputError(
                "A 3-D model shows one focus map, but this job makes one per "
                f"{'time point' if image.n_times is not None else 'channel'}; fuse one time "
                "point with the channels combined, or leave out the model."
            )
        self.sink, self.job = sink, job
        self.dtype = np.dtype(image.data.dtype)
        self.scale = None if job.focus_scale is None else np.float32(job.focus_scale)
        self.sampler = ReliefSampler(
            image.shape_yx, image.rgb, default_contrast(self.dtype, image.rgb)
        )
        physical = image.unit == "um" and image.pixel_size is not None
        z_per_unit = 1.0 if job.focus_scale is not None else image.z_step_um
        self.units = model_units(image.pixel_size if physical else None, z_per_unit)
        self.record = fusion_record(job)

    def write(self, part: Any, tile: Any, result: Any) -> None:
        from .stack import to_dtype

        self.sink.write(part, tile, result)
        focus = result.focus if self.scale is None else result.focus * self.scale
        fused = to_dtype(result.fused, self.dtype)
        self.sampler.add(*tile.write, fused, focus, result.confidence)

    def cover(self, part: Any, tile: Any, mask: np.ndarray) -> None:
        cover = getattr(self.sink, "cover", None)
        if cover is not None:
            cover(part, tile, mask)

    def model(self, path: Path, temps: list[Path]) -> None:
        """Write the model named ``path`` into its temporary files ``temps``."""
        files = model_bytes(
            self.sampler.relief(),
            self.units,
            mesh_format(path),
            record=self.record,
            texture_name=texture_path(path).name,
        )
        for temp, role in zip(temps, ("model", "texture"), strict=False):
            temp.write_bytes(files[role])
