"""``read_ct``: the one way in for a CT from any path, a DICOM folder, file list or volume file."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .image_io import has_volume_suffix, read_volume, refuse_nonfinite
from .volume import Volume

if TYPE_CHECKING:
    from .dicom_io import DicomCT


@dataclass
class CTInput:
    volume: Volume  # on the project's geometry (LPS, array[k, j, i], HU)
    dicom: DicomCT | None = None  # for DICOM input the slice headers an RTSTRUCT must reference


def read_ct(path: str | os.PathLike, series_uid: str | None = None) -> CTInput:
    """A CT from a DICOM folder or file, or a NRRD / NIfTI / MHA file (``series_uid``: which
    series of a DICOM folder holding several)."""
    path = Path(path)
    if path.is_dir() or (path.is_file() and not has_volume_suffix(path)):
        from .dicom_io import read_dicom_ct  # pydicom only for DICOM input

        dicom = read_dicom_ct(path if path.is_dir() else [path], series_uid)
        return CTInput(dicom.volume, dicom)
    if has_volume_suffix(path):
        volume = read_volume(path)
        refuse_nonfinite(volume, path)
        return CTInput(volume)
    raise InputError("no such file or folder", path)
