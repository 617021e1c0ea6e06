"""``python -m napari_pdmfuse``: the ``pdmfuse`` command, for environments without its script."""

from .terminal import launch

launch()
