"""Where received instances and results live. Names are the node's own (a hash of a UID): UIDs
come from the network and are untrusted, never part of a path."""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path

UID = re.compile(r"[0-9]+(\.[0-9]+)*")


def valid_uid(value) -> bool:
    """A DICOM UID (PS3.5 9.1): digits and dots, at most 64 characters."""
    text = str(value or "")
    return len(text) <= 64 and UID.fullmatch(text) is not None


def key(uid: str) -> str:
    return hashlib.sha256(uid.encode("ascii")).hexdigest()[:32]


class Spool:
    def __init__(self, root: Path):
        self.root = root
        # partial: instances being written, apart, so a series folder only ever holds whole files
        self.incoming, self.results, self.partial = root / "incoming", root / "results", root / "partial"
        for folder in (self.incoming, self.results, self.partial):
            folder.mkdir(parents=True, exist_ok=True)

    JOURNAL_NAME = "journal.sqlite"

    @property
    def journal_path(self) -> Path:
        return self.root / self.JOURNAL_NAME

    def series_folder(self, series_uid: str) -> Path:
        return self.incoming / key(series_uid)

    def store(self, series_uid: str, sop_uid: str, encoded: bytes) -> Path:
        """Write one instance durably: a temporary file, flushed to disk, renamed into place, its
        folder flushed too, so that once this returns the instance survives a crash or power cut."""
        folder = self.series_folder(series_uid)
        folder.mkdir(exist_ok=True)
        path = folder / f"{key(sop_uid)}.dcm"
        handle, temporary = tempfile.mkstemp(dir=self.partial)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(encoded)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _sync_folder(folder)
        return path

    def remove_partial_files(self) -> int:
        """Instances a crash left half-written (never acknowledged): removed at start."""
        partial = list(self.partial.iterdir())
        for path in partial:
            path.unlink(missing_ok=True)
        return len(partial)

    def remove(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename); Windows has no such call and needs none."""
    if os.name == "nt":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
