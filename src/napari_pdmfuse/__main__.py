"""``python -m napari_pdmfuse``: the ``pdmfuse`` command, for environments without its script."""

from .entry import launch

launch()
