"""Files in, files out: the job the command line runs, callable from Python.

:func:`fuse_files_iter` opens the inputs lazily, checks every output (names, inputs never
written over, free disk space) before any work, plans the job, streams its tiles — on this
machine or on a dask cluster — into temporary files beside the targets and moves them into
place only when all are complete. It yields :class:`~napari_pdmfuse.planning.Progress` like
the in-memory :func:`~napari_pdmfuse.fuse_iter`, and returns what it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .errors import InputError, PdmFuseError
from .executing import out_of_memory
from .options import FuseOptions
from .outputs import KINDS, FileOutputs, check_formats, output_bytes
from .overview import Overview, Sampler, overview_of_files
from .planning import AlignmentLog, Job, Progress, plan_job
from .reading import Scene, is_url, list_scenes, open_image, pick_scenes, scene_path
from .resume import outputs_done
from .sizes import check_disk
from .writing.atomic import atomic_files, check_outputs, write_failed
from .writing.omezarr import DEFAULT_NGFF_VERSION, check_ngff_version

T = TypeVar("T")


@dataclass(frozen=True)
class Outputs:
    """The files a run writes: the fused image, and the maps, mask and 3-D model asked for
    (``mesh``: .glb, .ply or .stl, see :mod:`napari_pdmfuse.meshes`)."""

    fused: Path
    focus_map: Path | None = None
    confidence: Path | None = None
    coverage: Path | None = None
    mesh: Path | None = None

    def named(self) -> dict[str, Path]:
        """The outputs asked for, by kind, in :data:`~napari_pdmfuse.outputs.KINDS` order."""
        paths = {k: getattr(self, k) for k in KINDS}
        return {k: Path(p) for k, p in paths.items() if p is not None}


@dataclass(frozen=True)
class Written:
    """What one run wrote, for summaries."""

    paths: list[Path]
    shape: tuple[int, ...]
    description: str
    seconds: float
    alignments: AlignmentLog = field(default_factory=AlignmentLog)
    skipped: bool = False  # resumed: the outputs were already there, made the same way
    overview: Overview | None = None  # samples and figures, when asked for


def describe_inputs(inputs: Sequence[Path]) -> str:
    return str(inputs[0]) if len(inputs) == 1 else f"{inputs[0]} … {inputs[-1]}"


def describe_job(job: Job) -> str:
    """E.g. "3 time points × 12 planes of 512×512 (2 channels)"."""
    image = job.image
    height, width = image.shape_yx
    text = f"{image.n_planes} planes of {height}×{width}"
    if image.n_times is not None:
        text = f"{image.n_times} time points × {text}"
    if image.has_channels:
        separate = job.options.channel_mode == "separate"
        text += f" ({image.n_channels} channels{', each on its own' if separate else ''})"
    return text


def naming(exc: PdmFuseError, source: str) -> PdmFuseError:
    """The same error, its message prefixed with the input's name unless it names a file."""
    message = str(exc)
    if source in message:
        return exc
    return type(exc)(f"{source}: {message}")


def as_outputs(outputs: Outputs | str | Path) -> Outputs:
    return outputs if isinstance(outputs, Outputs) else Outputs(fused=Path(outputs))


def fuse_files_iter(
    inputs: Sequence[str | Path] | str | Path,
    outputs: Outputs | str | Path,
    options: FuseOptions | None = None,
    *,
    axes: str | None = None,
    overwrite: bool = False,
    client: Any = None,
    keep: Sequence[str | Path] = (),
    ome_zarr_version: str = DEFAULT_NGFF_VERSION,
    resume: bool = False,
    overview: bool = False,
    scene: int | str | None = None,
) -> Generator[Progress, None, Written]:
    """Fuse a stack on disk into files, yielding progress over all tiles.

    ``inputs`` is a stack file (TIFF, OME-TIFF, OME-Zarr), a folder of planes or a list of
    plane files; ``outputs`` the files to write (a path is the fused image alone), their names
    picking the format (.tif, .ome.tif, .ome.zarr); ``axes`` names the input's axes instead of
    its own labels; ``client`` is a dask.distributed client to fuse on; ``keep`` lists further
    files never to write over (the other inputs of a batch); ``ome_zarr_version`` is the NGFF
    version of .ome.zarr outputs ("0.5", or "0.4" for older readers). With ``resume`` (and
    without ``overwrite``), outputs that exist as this run would make them are left untouched:
    when all do, nothing is fused and the result says ``skipped``; when some are missing, the
    job runs and replaces them all; an output made another way is refused (see
    :mod:`~napari_pdmfuse.resume`). With ``overview``, the result holds samples of the
    outputs and figures about them (:class:`~napari_pdmfuse.overview.Overview`). ``scene``
    (a number from 0, or a name) picks one image of a file that holds several (see
    :func:`scenes`; :func:`fuse_scenes` fuses them all). Raises
    :class:`~napari_pdmfuse.PdmFuseError` subclasses, naming the input, for anything the user
    can fix.
    """
    started = time.perf_counter()
    options = options or FuseOptions()
    given = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    raw = [p if is_url(p) else Path(p) for p in given]  # addresses stay strings
    if not raw:
        raise InputError("No input given; name a stack file, a folder of planes or plane files.")
    outputs = as_outputs(outputs)
    targets = outputs.named()
    check_ngff_version(ome_zarr_version)
    if "coverage" in targets and options.align is None:
        raise InputError(
            "--coverage writes the region that every aligned plane covers, so it needs --align "
            "translation or similarity."
        )
    protected = [*(p for p in raw if isinstance(p, Path)), *(Path(p) for p in keep)]
    resume = resume and not overwrite
    if options.retouch is not None and options.retouch.name is not None:
        protected.append(Path(options.retouch.name))  # the mask is an input too
    # Refuse clashing outputs before even opening the inputs, then again against every file read.
    existing = overwrite or resume  # with resume, existing outputs are judged once planned
    check_outputs(list(targets.values()), protected, overwrite=existing)
    source = describe_inputs(raw)
    if isinstance(scene, str):
        (picked,) = pick_scenes(list_scenes(raw), [scene], source)
        scene = picked.index
    image = open_image(raw, axes=axes, scene=scene)  # its messages name the file
    paths = check_outputs(list(targets.values()), [*protected, *image.sources], overwrite=existing)
    model: list[Path] = []
    if outputs.mesh is not None:
        from .meshes import check_model_outputs

        model = check_model_outputs(
            outputs.mesh, [*protected, *image.sources, *paths], overwrite=overwrite
        )
    try:
        job = plan_job(image, options, source=source)
        check_formats(job, targets)
        if resume:
            by_kind = dict(zip(targets, paths, strict=True))
            if outputs_done(job, by_kind):
                shape = tuple(int(n) for n in image.data.shape)
                seen = overview_of_files(job, by_kind) if overview else None
                return Written(paths, shape, describe_job(job), 0.0, skipped=True, overview=seen)
            overwrite = any(p.exists() for p in paths)  # made the same way: replaced as a set
        sizes = output_bytes(job, list(targets))
        check_disk([(targets[k], sizes[k]) for k in targets])
        try:
            with atomic_files([*paths, *model], overwrite=overwrite) as temps:
                sink = FileOutputs(
                    job,
                    dict(zip(targets, temps[: len(paths)], strict=True)),
                    ome_zarr_version=ome_zarr_version,
                )
                sampler = Sampler(job, sink) if overview else None
                tiles = sink if sampler is None else sampler
                try:
                    feed = tiles if not model else _model_sink(tiles, job)
                    if client is None:
                        yield from job.run(feed)
                    else:
                        from .cluster import run_on_cluster

                        yield from run_on_cluster(job, feed, client)
                    sink.finish()
                    if model:
                        feed.model(model[0], temps[len(paths) :])
                finally:
                    sink.close()
        except OSError as exc:
            if isinstance(exc, PdmFuseError):
                raise
            raise write_failed(paths[0].parent, exc) from None
        except MemoryError:  # outside a tile's fusion, which splits the tile first
            raise out_of_memory() from None
    except PdmFuseError as exc:
        raise naming(exc, source) from None
    seconds = time.perf_counter() - started
    shape = tuple(int(n) for n in image.data.shape)
    seen = None if sampler is None else sampler.overview()
    return Written(
        [*paths, *model], shape, describe_job(job), seconds, job.alignments, overview=seen
    )


def _model_sink(sink: Any, job: Job) -> Any:
    from .meshes import ModelSink

    return ModelSink(sink, job)


def fuse_files(
    inputs: Sequence[str | Path] | str | Path,
    outputs: Outputs | str | Path,
    options: FuseOptions | None = None,
    **keywords: Any,
) -> Written:
    """Fuse a stack on disk into files in one call; see :func:`fuse_files_iter`."""
    return run_to_end(fuse_files_iter(inputs, outputs, options, **keywords))


def run_to_end(steps: Generator[Progress, None, T]) -> T:
    """Run a progress generator to its end; its value."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value


def scenes(input: str | Path) -> tuple[Scene, ...]:
    """The scenes of a file: the scenes of a CZI, the positions of an ND2, the series of a LIF
    or of an OME-TIFF, the images of an OME-Zarr collection; one for any other input. Each
    has its ``index`` (from 0), its ``name`` as the file gives it (or None) and the ``label``
    its outputs are named with."""
    return list_scenes([input])


def scene_outputs(outputs: Outputs | str | Path, picked: Sequence[Scene]) -> list[Outputs]:
    """The outputs of each scene: the names given when one scene is fused, else each name
    with the scene's label before its suffix (``fused.tif`` → ``fused_A1.tif``)."""
    given = as_outputs(outputs)
    if len(picked) == 1:
        return [given]
    return [
        Outputs(**{k: scene_path(p, scene) for k, p in given.named().items()}) for scene in picked
    ]


def fuse_scenes(
    input: str | Path,
    outputs: Outputs | str | Path,
    options: FuseOptions | None = None,
    *,
    pick: Sequence[int | str] = (),
    **keywords: Any,
) -> list[Written]:
    """Fuse every scene of a file (or those in ``pick``, by number or name), each on its own
    into outputs named after it (see :func:`scene_outputs`); the keywords are those of
    :func:`fuse_files_iter`. Every output name is checked before the first scene starts."""
    chosen = pick_scenes(scenes(input), [str(p) for p in pick], input)
    named = scene_outputs(outputs, chosen)
    protected = [Path(input), *(Path(p) for p in keywords.get("keep", ()))]
    overwrite = keywords.get("overwrite", False) or keywords.get("resume", False)
    every = [p for each in named for p in each.named().values()]
    check_outputs(every, protected, overwrite=overwrite)
    return [
        fuse_files(input, each, options, scene=scene.index, **keywords)
        for scene, each in zip(chosen, named, strict=True)
    ]
