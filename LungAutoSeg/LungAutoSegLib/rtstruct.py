"""DICOM RTSTRUCT read and write through rt-utils (with the project's fixes applied).

The border between rt-utils' mask layout ``mask[row, column, slice]`` and the
project's ``array[k, j, i]`` is here and nowhere else. Both sort slices by position
along the slice normal, so slice n of one is slice n of the other.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from rt_utils import RTStruct, RTStructBuilder, ds_helper

from . import rtutils_fixes
from .atomic import atomic_path
from .dicom_io import DicomCT
from .errors import InputError
from .structures import STRUCTURES


def to_rtutils_mask(mask_kji: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(mask_kji, (1, 2, 0)), dtype=bool)


def from_rtutils_mask(mask_rcs: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.transpose(mask_rcs, (2, 0, 1)))


@dataclass
class RoiMasks:
    """ROI masks on a CT's grid (``array[k, j, i]``), with what could not be placed."""

    masks: dict[str, np.ndarray]
    warnings: list[str] = field(default_factory=list)


def load_rtstruct(path: str | os.PathLike) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(path)
        RTStructBuilder.validate_rtstruct(ds)
    except Exception as error:
        raise InputError(f"not a valid RTSTRUCT ({error})", path) from error
    return ds


def read_roi_masks(path: str | os.PathLike, ct: DicomCT, roi_names: list[str]) -> RoiMasks:
    """Rasterise the named ROIs of an RTSTRUCT onto the CT's grid."""
    ds = load_rtstruct(path)
    frame = ct.datasets[0].get("FrameOfReferenceUID")
    referenced_frames = {str(f.FrameOfReferenceUID) for f in ds.ReferencedFrameOfReferenceSequence}
    if frame and referenced_frames and frame not in referenced_frames:
        raise InputError(
            f"RTSTRUCT is on frame of reference {sorted(referenced_frames)}, the CT on {frame}", path
        )
    numbers = {str(r.ROIName): r.ROINumber for r in ds.StructureSetROISequence}
    result = RoiMasks({})
    for name in roi_names:
        if name not in numbers:
            raise InputError(f"no ROI named '{name}' (it has {sorted(numbers)})", path)
        try:
            contours = ds_helper.get_contour_sequence_by_roi_number(ds, numbers[name])
        except Exception:  # rt-utils raises a bare Exception when an ROI has no contours
            contours = []
        mask, unplaced = rtutils_fixes.contours_to_mask(ct.datasets, contours or [])
        if unplaced:
            result.warnings.append(
                f"{name}: {unplaced} of {len(contours)} contours lie on no slice of the CT"
            )
        result.masks[name] = from_rtutils_mask(mask)
    return result


def write_rtstruct(
    ct: DicomCT,
    masks: dict[str, np.ndarray],
    path: str | os.PathLike,
    *,
    series_description: str = "LungAutoSeg",
    generation_algorithm: str = "AUTOMATIC",
    overwrite: bool = False,
) -> Path:
    """A new RTSTRUCT referencing every slice of ``ct``, one ROI per mask (``array[k, j, i]``).

    Known structures get their standard colour. The file appears only when complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:  # refuse before the slow part, not after it
        raise InputError("exists already (use --overwrite to replace it)", path)
    with warnings.catch_warnings():
        # rt-utils sets is_little_endian / is_implicit_VR, which pydicom 3 deprecates
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pydicom")
        rtstruct = RTStruct(ct.datasets, ds_helper.create_rtstruct_dataset(ct.datasets))
    rtstruct.set_series_description(series_description)
    rtstruct.ds.Manufacturer = "LungAutoSeg"
    rtstruct.ds.ManufacturerModelName = series_description
    rtstruct.ds.InstitutionName = ct.datasets[0].get("InstitutionName", "")
    for name, mask in masks.items():
        if mask.shape != ct.volume.array.shape:
            raise ValueError(f"mask {name} has shape {mask.shape}, the CT {ct.volume.array.shape}")
        known = STRUCTURES.get(name)
        rtstruct.add_roi(
            mask=to_rtutils_mask(mask),
            name=name,
            color=list(known.colour) if known else None,
            roi_generation_algorithm=generation_algorithm,
        )
    with atomic_path(path, overwrite=overwrite) as temporary:
        rtstruct.ds.save_as(temporary)
    return path
