"""Atomic file writes: a failure never leaves half a file, and user files are not replaced unasked."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True, suffix: str = ""):
    """Yield a temporary path beside ``path``; rename it to ``path`` when the block succeeds.

    ``suffix`` keeps the temporary name's extension for writers that choose the format
    by it (SimpleITK).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError("exists already (use --overwrite to replace it)", path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
