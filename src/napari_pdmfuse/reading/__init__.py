"""Open every kind of input as one lazy :class:`Image`: TIFF, OME-TIFF, ImageJ hyperstacks,
OME-Zarr 0.4/0.5 and zarr arrays (on disk or at an HTTP(S)/S3 address), microscope vendors'
files (CZI, ND2, LIF through the optional bioio readers), a folder of planes, or a list of
plane files.

The command line, the widget's file inputs and the napari reader all start here, so an input is
checked once, with messages that name the offending file, and nothing is decoded until the
fusion (or a viewer) asks for a block.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import InputError, ReadError
from ..ngff import is_zarr_store
from .axes import normalise_axes
from .image import Image
from .planes import IMAGE_SUFFIXES, folder_images, natural_key, read_planes
from .remote import is_url
from .scenes import SINGLE, Scene, checked_index, pick_scenes, scene_path
from .tiff import is_tiff, read_tiff, tiff_scenes
from .vendor import FORMATS_EXTRA, other_reader, read_vendor, vendor_format, vendor_scenes

#: First bytes of the plane formats read through Pillow (PNG, JPEG, BMP).
_PLANE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"BM")

__all__ = [
    "IMAGE_SUFFIXES",
    "Image",
    "Scene",
    "is_tiff",
    "is_url",
    "list_scenes",
    "natural_key",
    "normalise_axes",
    "open_image",
    "pick_scenes",
    "scene_path",
]


def open_image(
    inputs: Sequence[str | Path],
    axes: str | None = None,
    *,
    for_viewing: bool = False,
    scene: int | None = None,
) -> Image:
    """Open a file, a folder of planes, a list of plane files or the address of a zarr store
    (``http(s)://…``, ``s3://…``) as one lazy image.

    The axes come from the file (ImageJ hyperstack, OME or NGFF metadata; axes of length one
    dropped); ``axes`` (e.g. "TZCYX") names them instead, one letter per axis of the file's
    array, with or without its axes of length one. ``for_viewing`` reads one focal plane per
    chunk, as a viewer shows them, rather than the planes of a tile together, as the fusion
    reads them. ``scene`` picks an image of a file that holds several (see
    :func:`list_scenes`); None reads the first, with a warning when there are more. Raises
    ReadError for missing or unreadable files and InputError for files that do not make a
    focus stack (one plane, planes of different sizes, an empty folder).
    """
    urls = [str(p) for p in inputs if is_url(p)]
    if urls:
        if len(inputs) > 1:
            raise InputError(
                f"{urls[0]} is given together with other inputs; give one remote zarr store on "
                "its own."
            )
        from .zarr import read_zarr  # zarr takes a fifth of a second to import: only for zarr

        return read_zarr(urls[0], axes, scene)
    paths = _checked_paths(inputs)
    path = paths[0]
    together = not for_viewing
    if is_zarr_store(path) and len(paths) == 1:
        from .zarr import read_zarr

        return read_zarr(path, axes, scene)
    kind = None if path.is_dir() or len(paths) > 1 else vendor_format(path)
    if kind is not None:
        return read_vendor(path, axes, planes_together=together, kind=kind, scene=scene)
    if len(paths) == 1 and path.is_file() and is_tiff(path):
        return read_tiff(path, axes, planes_together=together, scene=scene)
    if scene:  # the inputs below hold one image
        checked_index(path, SINGLE, scene)
    if len(paths) > 1:
        return read_planes(paths, axes)
    if path.is_dir():
        return read_planes(folder_images(path), axes, folder=path)
    if path.suffix.lower() in IMAGE_SUFFIXES or _starts_with(path, _PLANE_MAGIC):
        # A lone PNG/JPEG holds one plane, which read_planes reports clearly.
        return read_planes(paths, axes)
    if other_reader(path):
        return read_vendor(path, axes, planes_together=together, scene=scene)
    raise ReadError(
        f"{path} is in an unsupported format ({path.suffix or 'no file name suffix'}); give a "
        "TIFF, OME-TIFF, OME-Zarr, CZI, ND2 or LIF file or a folder of planes (vendor formats "
        f"need the optional formats: {FORMATS_EXTRA})."
    )


def list_scenes(inputs: Sequence[str | Path]) -> tuple[Scene, ...]:
    """The scenes of an input: the scenes, positions or series of a vendor file, the images of
    a multi-series OME-TIFF or of an OME-Zarr collection; one for anything else (a folder or
    list of planes, a remote store, a single image)."""
    if len(inputs) != 1 or is_url(inputs[0]):
        return SINGLE
    (path,) = _checked_paths(inputs)
    if is_zarr_store(path):
        from .zarr import zarr_scenes

        found = zarr_scenes(path)
        return SINGLE if found is None else found[0]
    if path.is_dir():
        return SINGLE
    kind = vendor_format(path)
    if kind is not None:
        return vendor_scenes(path, kind)
    if is_tiff(path):
        return tiff_scenes(path)
    return vendor_scenes(path) if other_reader(path) else SINGLE


def _starts_with(path: Path, magic: tuple[bytes, ...]) -> bool:
    with path.open("rb") as handle:
        return handle.read(8).startswith(magic)


def _checked_paths(inputs: Sequence[str | Path]) -> list[Path]:
    """The inputs as paths: present, and either one file or folder, or several files."""
    paths = [Path(p) for p in inputs]
    if not paths:
        raise InputError("No input given; name a multi-page TIFF, a folder of planes or files.")
    for path in paths:
        if not path.exists():
            raise ReadError(f"Input {path} does not exist; check the path.")
    if len(paths) == 1:
        return paths
    folders = [p for p in paths if p.is_dir()]
    if folders:
        raise InputError(
            f"{folders[0]} is a folder given together with other inputs; give either one folder "
            "or a list of image files."
        )
    seen: dict[Path, Path] = {}
    for path in paths:
        key = path.resolve()
        if key in seen:
            raise InputError(f"{path} is given twice; list each focal plane once.")
        seen[key] = path
    return paths
