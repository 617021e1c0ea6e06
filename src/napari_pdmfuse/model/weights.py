"""The shipped PDMNet weights: saved and loaded as plain tensors, checked against a SHA-256.

Weights are read with ``torch.load(weights_only=True)`` only, so a weights file can never run
code, and the shipped file must match the checksum recorded next to it.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import torch

from ..errors import InputError
from .pdmnet import PDMNet

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "pdmnet.pt"
CARD_PATH = WEIGHTS_PATH.with_suffix(".json")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_weights(model: PDMNet, path: Path, meta: dict) -> None:
    """Write the state dict and, beside it, a JSON card with the checksum and training record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"widths": list(model.widths), "state": model.state_dict()}, path)
    card = {"sha256": sha256(path), **meta}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def load_model(path: Path | None = None) -> PDMNet:
    """Load PDMNet from ``path`` (default: the shipped weights), refusing anything suspicious."""
    target = Path(path) if path else WEIGHTS_PATH
    if path is None and not target.is_file():
        raise InputError(
            f"The shipped PDMNet weights are missing ({target}); reinstall napari-pdmfuse."
        )
    if not target.is_file():
        raise InputError(f"The weights file {target} does not exist; pass an existing .pt file.")
    if path is None:
        expected = json.loads(CARD_PATH.read_text())["sha256"]
        if sha256(target) != expected:
            raise InputError(
                f"The shipped weights {target} do not match their recorded SHA-256; reinstall "
                "napari-pdmfuse."
            )
    try:
        checkpoint = torch.load(target, map_location="cpu", weights_only=True)
        model = PDMNet(tuple(checkpoint["widths"]))
        model.load_state_dict(checkpoint["state"])
    except Exception as err:  # any failure here means the file is not our weights
        raise InputError(
            f"{target} is not a PDMNet weights file ({type(err).__name__}); use the shipped "
            "weights or a file written by `python -m napari_pdmfuse.train`."
        ) from None
    return model.eval()


@cache
def shipped_model() -> PDMNet:
    return load_model()
