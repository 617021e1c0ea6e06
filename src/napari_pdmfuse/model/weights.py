"""PDMNet weights: saved and loaded as plain tensors, checked against a SHA-256.

Weights are read with ``torch.load(weights_only=True)`` only, so a weights file can never run
code. The shipped file must match the checksum on its card (``pdmnet.json``); a user's file
``model.pt`` must match the ``sha256`` of its card ``model.json`` when one lies beside it, as
:func:`save_weights` (and so the training script) writes it.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from functools import cache
from pathlib import Path

import torch

from ..errors import InputError
from .pdmnet import PDMNet, channels_last

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "pdmnet.pt"
CARD_PATH = WEIGHTS_PATH.with_suffix(".json")

#: Largest layer width accepted from a weights file (the shipped model uses 48).
MAX_WIDTH = 1024


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_weights(model: PDMNet, path: Path, meta: dict) -> None:
    """Write the state dict and, beside it, a JSON card with the checksum and training record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    design = {"light": model.light, "logit_bound": model.logit_bound}
    torch.save({"widths": list(model.widths), **design, "state": model.state_dict()}, path)
    card = {"sha256": sha256(path), **meta}
    path.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")


def _widths(value: object) -> tuple[int, ...]:
    """The layer widths of a checkpoint, bounded so a crafted file cannot exhaust memory."""
    widths = tuple(value)  # type: ignore[call-overload]
    if not 1 <= len(widths) <= 8 or not all(
        isinstance(w, int) and 1 <= w <= MAX_WIDTH for w in widths
    ):
        raise ValueError(f"implausible layer widths {widths[:8]}")
    return widths


def _focus_head(state: dict) -> str | None:
    """The kind of focus head a state dict holds: "coarse", "fine" or none."""
    if any(key.startswith("focus_head.coarse.") for key in state):
        return "coarse"
    return "fine" if any(key.startswith("focus_head.") for key in state) else None


def card_path(path: Path) -> Path:
    """The JSON card :func:`save_weights` writes beside ``path``: model.pt → model.json."""
    return path.with_suffix(".json")


def _check_card(target: Path, card: Path, *, shipped: bool) -> None:
    """Refuse ``target`` unless it matches the sha256 recorded on ``card``."""
    fix = "reinstall napari-pdmfuse" if shipped else f"delete {card.name} or use the right file"
    try:
        expected = json.loads(card.read_text())["sha256"]
        if not isinstance(expected, str):
            raise TypeError(expected)
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"The weights card {card} is unreadable or has no sha256, so {target.name} cannot be "
            f"verified; {fix}."
        ) from None
    if sha256(target) != expected.lower():
        raise InputError(
            f"The weights {target} do not match the SHA-256 recorded in {card.name}, so they may "
            f"be damaged or replaced; {fix}."
        )


def load_model(path: str | Path | None = None) -> PDMNet:
    """Load PDMNet from ``path`` (default: the shipped weights), refusing anything suspicious.

    The file must match the SHA-256 on its card (required for the shipped weights, checked for a
    user's file when the card exists), and it is read as plain tensors only: a pickle that would
    run code is refused, never executed.
    """
    shipped = path is None
    target = WEIGHTS_PATH if shipped else Path(path)
    if shipped and not target.is_file():
        raise InputError(
            f"The shipped PDMNet weights are missing ({target}); reinstall napari-pdmfuse."
        )
    if not target.is_file():
        raise InputError(f"The weights file {target} does not exist; pass an existing .pt file.")
    card = CARD_PATH if shipped else card_path(target)
    if shipped or card.is_file():
        _check_card(target, card, shipped=shipped)
    try:
        checkpoint = torch.load(target, map_location="cpu", weights_only=True)
        state = checkpoint["state"]
        model = PDMNet(
            _widths(checkpoint["widths"]),
            focus_head=_focus_head(state),
            light=bool(checkpoint.get("light", False)),
            logit_bound=float(checkpoint.get("logit_bound", 0.0)),
        )
        model.load_state_dict(state)
    except pickle.UnpicklingError:
        raise InputError(
            f"{target} is not a PDMNet weights file: it holds Python objects that could run "
            "code, so it was not loaded; use the shipped weights or a file written by "
            "`python -m napari_pdmfuse.training`."
        ) from None
    except Exception as err:  # any failure here means the file is not our weights
        raise InputError(
            f"{target} is not a PDMNet weights file ({type(err).__name__}); use the shipped "
            "weights or a file written by `python -m napari_pdmfuse.training`."
        ) from None
    return model.eval()


@cache
def shipped_model(device: torch.device) -> PDMNet:
    """The shipped network on ``device``, loaded once per device and ready for inference."""
    return channels_last(load_model().to(device))
