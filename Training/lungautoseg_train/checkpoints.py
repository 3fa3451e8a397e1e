"""Training checkpoints: written atomically, read without running pickled code."""
from __future__ import annotations

from pathlib import Path

import torch

from LungAutoSegLib.atomic import atomic_path
from LungAutoSegLib.errors import InputError


def save_checkpoint(path: Path, state: dict) -> None:
    """A kill during the write leaves the previous checkpoint whole."""
    with atomic_path(path, suffix=".pt") as temporary:
        torch.save(state, temporary)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # no pickle code runs
    except FileNotFoundError:
        raise InputError("checkpoint not found", path) from None
    except Exception as error:  # torch raises several types for a corrupt or foreign file
        raise InputError(f"not a readable LungAutoSeg checkpoint ({type(error).__name__}: {error})", path) from error
