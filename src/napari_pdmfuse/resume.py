"""Rerunning a job whose outputs already exist: what was done is kept, what was not is done.

Every output records how it was made (:func:`~napari_pdmfuse.outputs.fusion_record`), so a
rerun can tell, from the files alone, an output it would make again — same kind of values,
same method, options and weights' SHA-256, same size and data type — from one made another
way. The package version is not compared: a release that changes results changes the method
or the weights too. Outputs appear together (:mod:`.writing.atomic`), so a set with some
missing is one an earlier run did not finish, or one that asked for fewer maps; an output older
than its input was made from an earlier version of it: both are made again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import OutputError
from .outputs import output_specs
from .planning import Job
from .writing.recorded import Recorded, read_recorded

#: Record entries that may differ between an output and the run that would make it again.
NOT_COMPARED = ("version",)


def outputs_done(job: Job, targets: dict[str, Path]) -> bool:
    """Whether every output in ``targets`` (by kind) exists as ``job`` would make it.

    False when some are missing or older than the input, so the job must run (the existing
    ones, made the same way, may then be replaced); raises OutputError, in one sentence, for an
    existing output made another way or not by napari-pdmfuse at all.
    """
    specs = output_specs(job)
    newest = max((_modified(p) for p in job.image.sources), default=0)
    present = 0
    for kind, path in targets.items():
        if not path.exists():
            continue
        recorded = read_recorded(path)
        if recorded is None or not recorded.record:
            raise OutputError(
                f"The output {path} already exists and was not made by pdmfuse; choose another "
                "name or allow overwriting (--overwrite)."
            )
        _, shape, dtype, meta = specs[kind]
        differences = _differences(recorded, shape, dtype, meta.record())
        if differences:
            raise OutputError(
                f"The output {path} was made with other options ({'; '.join(differences)}); "
                "rerun with the options it records, write to another folder or replace it "
                "(--overwrite)."
            )
        present += _modified(path) >= newest  # older than its input: made from an earlier one
    return present == len(targets)


def _modified(path: Path) -> int:
    """When a file, or a folder itself, was last modified (ns); 0 when that cannot be told."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _differences(
    found: Recorded, shape: tuple[int, ...], dtype: np.dtype, record: dict[str, str]
) -> list[str]:
    """How ``found`` differs from what would be made, as items like "method wavelet, not
    argmax"."""
    differences = []
    keys = [k for k in dict.fromkeys([*record, *found.record]) if k not in NOT_COMPARED]
    for key in keys:
        theirs, ours = found.record.get(key), record.get(key)
        if theirs != ours:
            differences.append(f"{key} {_short(theirs)}, not {_short(ours)}")
    if found.shape != tuple(shape):
        differences.append(f"size {_size(found.shape)}, not {_size(shape)}")
    if found.dtype != dtype:
        differences.append(f"data type {found.dtype}, not {np.dtype(dtype)}")
    return differences


def _short(value: str | None) -> str:
    """A recorded value as a message shows it: SHA-256 digests cut to 12 digits."""
    if value is None:
        return "unset"
    return f"{value[:12]}…" if len(value) == 64 and value.isalnum() else value


def _size(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)
