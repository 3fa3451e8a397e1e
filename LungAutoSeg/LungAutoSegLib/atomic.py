"""Atomic file writes: a failure never leaves half a file, and user files are not replaced unasked."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import InputError

# A temporary name is ".<name>.XXXXXXXX<suffix>": two dots, mkstemp's 8 characters and a suffix of
# up to 7 (.nii.gz), so a name can be this much shorter than the file system's limit at most.
TEMPORARY_NAME_EXTRA = 17


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
    os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; the result gets normal permissions
    try:
        yield Path(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_folder(path: str | os.PathLike, *, overwrite: bool = False):
    """Like ``atomic_path`` for a folder: filled under a temporary name, then renamed into place."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise InputError("exists already (use --overwrite to replace it)", path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        yield staging
        if path.exists():  # a folder cannot be replaced in one step: move the old one aside first
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old)
        else:
            os.replace(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
