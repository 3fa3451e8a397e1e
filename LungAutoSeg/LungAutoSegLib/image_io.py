"""Volume files (NRRD, NIfTI, MHA) through SimpleITK (``ct_reader.read_ct`` reads a CT from any path).

SimpleITK works in LPS like DICOM (it converts NIfTI's RAS on read and write), so a
volume's geometry passes through unchanged. Writes are atomic: a temporary name in
the destination folder, renamed when complete, so a failure never leaves half a file.
"""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import InputError
from .memory import check_fits
from .volume import Volume, is_orthonormal

VOLUME_SUFFIXES = (".nrrd", ".nii", ".nii.gz", ".mha", ".mhd")


def has_volume_suffix(path: Path) -> bool:
    return str(path).lower().endswith(VOLUME_SUFFIXES)


def volume_from_sitk(image: sitk.Image) -> Volume:
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a 3D scalar image, got {image.GetDimension()}D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return Volume.from_spacing(
        sitk.GetArrayFromImage(image),
        image.GetSpacing(),
        image.GetOrigin(),
        np.asarray(image.GetDirection()).reshape(3, 3),
    )


def volume_to_sitk(volume: Volume) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection([float(d) for d in volume.direction.ravel()])
    return image


def read_volume(path: str | os.PathLike) -> Volume:
    path = Path(path)
    if not path.is_file():
        raise InputError("no such file", path)
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()  # the header only: a CT too big for memory is refused unread
        if reader.GetDimension() == 3:
            check_fits(reader.GetSize(), path)
        volume = volume_from_sitk(reader.Execute())
    except InputError as error:
        if error.path:
            raise
        raise InputError(str(error), path) from error
    except RuntimeError as error:  # SimpleITK reports every read failure this way
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unreadable"
        raise InputError(f"cannot read image ({first_line})", path) from error
    if not is_orthonormal(volume.direction):
        raise InputError("direction matrix is not orthonormal", path)
    return volume


def write_volume(volume: Volume, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Write atomically; the format follows the suffix (.nrrd, .nii.gz, .mha)."""
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    with atomic_path(path, overwrite=overwrite, suffix=suffix) as temporary:
        sitk.WriteImage(volume_to_sitk(volume), str(temporary), useCompression=True)
    return path


def refuse_nonfinite(volume: Volume, path: Path) -> None:
    """A float volume file with NaN or infinity is refused: no HU there to contour."""
    if not np.issubdtype(volume.array.dtype, np.integer) and (
            not np.all(np.isfinite(volume.array)) or _nifti_stores_nonfinite(path)):
        raise InputError("image contains NaN or infinite values", path)


NIFTI_FLOATS = {16: "f4", 64: "f8"}  # NIfTI datatype codes of float32 and float64


def _nifti_stores_nonfinite(path: Path) -> bool:
    """Whether a NIfTI file stores NaN or infinity. SimpleITK's reader (2.5.7) turns NaN into
    0, so a CT with NaN holes would read as water there: the stored floats are checked here."""
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return False
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as stream:
        data = stream.read()
    for endian in "<>":
        header_size = struct.unpack(endian + "i", data[:4])[0]
        if header_size == 348:    # NIfTI-1: datatype at byte 70, vox_offset (float) at 108
            datatype, offset = struct.unpack(endian + "h", data[70:72])[0], struct.unpack(endian + "f", data[108:112])[0]
        elif header_size == 540:  # NIfTI-2: datatype at byte 12, vox_offset (int64) at 168
            datatype, offset = struct.unpack(endian + "h", data[12:14])[0], struct.unpack(endian + "q", data[168:176])[0]
        else:
            continue
        if datatype not in NIFTI_FLOATS:
            return False
        dtype = np.dtype(endian + NIFTI_FLOATS[datatype])
        count = (len(data) - int(offset)) // dtype.itemsize
        return not np.all(np.isfinite(np.frombuffer(data, dtype=dtype, count=count, offset=int(offset))))
    return False
