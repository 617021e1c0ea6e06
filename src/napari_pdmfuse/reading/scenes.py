"""Files that hold several images: the scenes of a CZI, the positions of an ND2, the series of a
LIF or of an OME-TIFF, the images of an OME-Zarr collection (bioformats2raw layout).

Each such image is a *scene* here, numbered from 0 in the file's order and named as the file
names it. Every scene is fused on its own, into outputs named after it: the scene's name made
safe for file names (its :attr:`Scene.label`), or ``scene<index>`` where the file gives none
or the same name twice. Any other input is one scene.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, PdmFuseWarning

#: Characters kept in a scene's label; any run of others becomes one "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Scene:
    """One image of a file: its place (``index``, from 0), its ``name`` as the file gives it
    (None when it gives none) and ``label``, the name used in output file names."""

    index: int
    name: str | None
    label: str

    def describe(self) -> str:
        """E.g. ``"A1"`` or ``"scene 2"``, for messages."""
        return self.name or f"scene {self.index}"


#: The one scene of an input that holds a single image.
SINGLE = (Scene(0, None, "scene0"),)


def scenes_named(names: Sequence[str | None]) -> tuple[Scene, ...]:
    """Scenes with these names, in order, each labelled safely and uniquely."""
    safe = [_UNSAFE.sub("_", name).strip("._-") if name else "" for name in names]
    labels = [
        label if label and safe.count(label) == 1 else f"scene{index}"
        for index, label in enumerate(safe)
    ]
    return tuple(
        Scene(index, name or None, label)
        for index, (name, label) in enumerate(zip(names, labels, strict=True))
    )


def pick_scenes(scenes: Sequence[Scene], wanted: Sequence[str], source: object) -> list[Scene]:
    """The scenes named in ``wanted`` (each a scene's name or label, else its index), in the
    file's order; all of them when ``wanted`` is empty."""
    if not wanted:
        return list(scenes)
    picked: list[Scene] = []
    for text in wanted:
        found = next((s for s in scenes if text in (s.name, s.label)), None)
        if found is None and text.strip().isdigit() and int(text) < len(scenes):
            found = scenes[int(text)]
        if found is None:
            listing = ", ".join(f"{s.index} ({s.name})" if s.name else str(s.index) for s in scenes)
            raise InputError(
                f"{source} has no scene {text!r}; its scenes are {listing}, so pick one of them "
                "by name or number (from 0)."
            )
        picked.append(found)
    return [s for s in scenes if s in picked]


def scene_path(path: Path, scene: Scene) -> Path:
    """``path`` with the scene's label added to its name, before its (possibly double)
    suffix: ``fused.ome.tif`` → ``fused_A1.ome.tif``."""
    from .image import stem

    base = stem(path)
    return path.with_name(f"{base}_{scene.label}{path.name[len(base) :]}")


def warn_first_only(path: Path, scenes: Sequence[Scene]) -> None:
    """Say that a file of several scenes is read for its first scene only."""
    if len(scenes) > 1:
        warnings.warn(
            PdmFuseWarning(
                f"{path} holds {len(scenes)} scenes and only the first ({scenes[0].describe()}) "
                "is read; pick one with scene= or fuse them all with fuse_scenes (pdmfuse fuse "
                "and batch fuse every scene)."
            ),
            stacklevel=4,
        )


def checked_index(path: Path, scenes: Sequence[Scene], index: int) -> Scene:
    """The scene at ``index`` of a file's ``scenes``, refused in one sentence if there is none."""
    if not 0 <= index < len(scenes):
        raise InputError(
            f"{path} has {len(scenes)} scene{'s' if len(scenes) > 1 else ''}, so there is no "
            f"scene {index}; number them from 0."
        )
    return scenes[index]
