"""The "Open stack…" file dialog: one dialog for stack files and for stack folders.

A stack may be a file (TIFF, CZI, ND2, LIF) or a folder (an OME-Zarr store, a folder of planes),
and Qt's file dialogs pick either files or folders. This one picks files, and also takes a
selected folder when it holds a stack, instead of entering it; double-clicking a folder still
enters it, and pressing Open on any other folder too. It starts in, and adds to, napari's own
open history, as File ▸ Open does.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtWidgets import QDialog, QFileDialog, QWidget

from ..errors import PdmFuseError
from ..ngff import is_zarr_name, is_zarr_store
from ..reading.planes import folder_images

#: The dialog's name filter: the stack files this plugin reads (folders are always listed).
FILTER = (
    "Stacks (*.tif *.tiff *.czi *.nd2 *.lif);;"
    "OME-Zarr stores and folders of planes (*.zarr);;"
    "All files (*)"
)


def is_stack_folder(path: Path) -> bool:
    """Whether a folder opens as one stack: a zarr store, or a folder holding plane images."""
    if not path.is_dir():
        return False
    if is_zarr_name(path) or is_zarr_store(path):
        return True
    try:
        folder_images(path)
    except PdmFuseError:
        return False
    return True


class StackDialog(QFileDialog):
    """A file dialog whose Open button also takes a selected folder that holds a stack."""

    def __init__(self, parent: QWidget | None = None, directory: str = "") -> None:
        super().__init__(parent, "Open stack", directory, FILTER)
        # Qt's own widgets, not the platform's dialog, so that accept() below is called.
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)
        self.setFileMode(QFileDialog.FileMode.ExistingFile)
        self.chosen: Path | None = None

    def accept(self) -> None:
        selected = [Path(p) for p in self.selectedFiles()]
        if len(selected) == 1 and is_stack_folder(selected[0]):
            self.chosen = selected[0]
            QDialog.accept(self)  # Qt's file modes would enter the folder instead
            return
        super().accept()  # a file is accepted; another folder is entered
        if self.result() == QDialog.DialogCode.Accepted and selected:
            self.chosen = selected[0]


def ask_stack_path(parent: QWidget | None = None) -> Path | None:
    """Ask for a stack file or folder; None when the user cancels."""
    from napari.utils.history import get_open_history, update_open_history

    dialog = StackDialog(parent, get_open_history()[0])
    if not dialog.exec_() or dialog.chosen is None:
        return None
    update_open_history(str(dialog.chosen))
    return dialog.chosen
