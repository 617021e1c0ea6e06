"""``python -m napari_pdmfuse``: the ``pdmfuse`` command, for environments without its script."""

import sys

from .cli import main

sys.exit(main())
