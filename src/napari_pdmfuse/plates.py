"""HCS plates (OME-NGFF plate / well / field) fused into plates of the same layout.

A screen's plate holds a focus stack per field of every well. Each field is fused on its own,
tile by tile like any stack, straight into the same place of a new plate — one for the fused
images, one per map asked for — which copies the input plate's metadata (rows, columns, wells,
acquisitions, fields): the result opens as a plate wherever the input did. Each output plate
is written under a temporary name and appears whole once every field is in, as every output
does; its NGFF version is the one asked for (0.5 by default), whatever the input's.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import OutputError, PdmFuseError, ReadError
from .files import Outputs, Written, as_outputs, describe_job, naming, run_to_end
from .ngff import is_zarr_name
from .options import FuseOptions
from .outputs import FileOutputs, output_bytes
from .planning import Job, Progress, plan_job
from .reading import open_image
from .reading.zarr import ome_attrs, plate_fields
from .sizes import check_disk
from .writing.atomic import atomic_files, check_outputs, write_failed
from .writing.omezarr import DEFAULT_NGFF_VERSION, ZARR_FORMATS, check_ngff_version


@dataclass(frozen=True)
class Layout:
    """A plate's metadata (``plate``; each well's, by its path) and its fields' groups, in
    the order the reader numbers them as scenes."""

    plate: dict[str, Any]
    wells: dict[str, dict[str, Any]]
    fields: list[str]


def plate_layout(path: Path) -> Layout | None:
    """The layout of the HCS plate at ``path``; None for anything that is no plate."""
    import zarr

    try:
        root = zarr.open_group(str(path), mode="r")
        attrs = ome_attrs(dict(root.attrs))
    except Exception:
        return None
    if "plate" not in attrs:
        return None
    fields = plate_fields(root, path)
    wells = {w: dict(ome_attrs(dict(root[w].attrs))["well"]) for w, _, _ in fields}
    fields_paths = [f"{well}/{field}" for well, _, field in fields]
    return Layout(dict(attrs["plate"]), wells, fields_paths)


def _versioned(key: str, meta: dict[str, Any], version: str) -> dict[str, Any]:
    """Plate or well metadata as NGFF ``version`` spells it: 0.4 in the object, 0.5 under
    ``ome``."""
    meta = {k: copy.deepcopy(v) for k, v in meta.items() if k != "version"}
    if version == "0.4":
        return {key: {**meta, "version": version}}
    return {"ome": {"version": version, key: meta}}


def _plate_groups(root: Path, layout: Layout, version: str) -> None:
    """The plate's groups (rows, wells) and their metadata, in the store at ``root``."""
    import zarr

    group = zarr.open_group(str(root), mode="w", zarr_format=ZARR_FORMATS[version])
    for well, meta in layout.wells.items():
        node = group
        for part in well.split("/"):
            node = node.require_group(part)
        node.attrs.update(_versioned("well", meta, version))
    group.attrs.update(_versioned("plate", layout.plate, version))


def fuse_plate_iter(
    input: str | Path,
    outputs: Outputs | str | Path,
    options: FuseOptions | None = None,
    *,
    overwrite: bool = False,
    client: Any = None,
    ome_zarr_version: str = DEFAULT_NGFF_VERSION,
) -> Generator[Progress, None, Written]:
    """Fuse every field of the HCS plate ``input`` into plates of the same layout (``outputs``,
    each named .ome.zarr), yielding progress over all fields' tiles; on a dask cluster with
    ``client``. Raises PdmFuseError subclasses for anything the user can fix."""
    started = time.perf_counter()
    options = options or FuseOptions()
    path = Path(input)
    check_ngff_version(ome_zarr_version)
    layout = plate_layout(path)
    if layout is None:
        raise ReadError(f"{path} is not an OME-Zarr plate; fuse it as any other stack.")
    targets = as_outputs(outputs).named()
    for target in targets.values():
        if not is_zarr_name(target):
            raise OutputError(
                f"The output {target} of the plate {path} is not named .ome.zarr; a plate is "
                "written as an OME-Zarr plate, so name it .ome.zarr."
            )
    paths = check_outputs(list(targets.values()), [path], overwrite=overwrite)
    try:
        jobs = [_field_job(path, index, key, options) for index, key in enumerate(layout.fields)]
        sizes = [output_bytes(job, list(targets)) for job in jobs]
        check_disk([(targets[k], sum(s[k] for s in sizes)) for k in targets])
        total, done = sum(job.n_tiles for job in jobs), 0
        try:
            with atomic_files(paths, overwrite=overwrite) as temps:
                roots = dict(zip(targets, temps, strict=True))
                for root in roots.values():
                    _plate_groups(root, layout, ome_zarr_version)
                for key, job in zip(layout.fields, jobs, strict=True):
                    groups = {kind: root / key for kind, root in roots.items()}
                    for step in _run(job, groups, client, ome_zarr_version):
                        yield Progress(done + step.done, total)
                    done += job.n_tiles
        except OSError as exc:
            if isinstance(exc, PdmFuseError):
                raise
            raise write_failed(paths[0].parent, exc) from None
    except PdmFuseError as exc:
        raise naming(exc, str(path)) from None
    description = f"{len(jobs)} fields of {describe_job(jobs[0])} each"
    shape = tuple(int(n) for n in jobs[0].image.data.shape)
    return Written(paths, shape, description, time.perf_counter() - started)


def _field_job(plate: Path, index: int, key: str, options: FuseOptions) -> Job:
    image = open_image([plate], scene=index)
    return plan_job(image, options, source=f"{plate} ({key})")


def _run(
    job: Job, paths: dict[str, Path], client: Any, version: str
) -> Generator[Progress, None, None]:
    """One field's tiles into its groups of the output plates."""
    sink = FileOutputs(job, paths, ome_zarr_version=version, in_store=True)
    try:
        if client is None:
            yield from job.run(sink)
        else:
            from .cluster import run_on_cluster

            yield from run_on_cluster(job, sink, client)
        sink.finish()
    finally:
        sink.close()


def fuse_plate(
    input: str | Path,
    outputs: Outputs | str | Path,
    options: FuseOptions | None = None,
    **keywords: Any,
) -> Written:
    """Fuse every field of a plate in one call; see :func:`fuse_plate_iter`."""
    return run_to_end(fuse_plate_iter(input, outputs, options, **keywords))
