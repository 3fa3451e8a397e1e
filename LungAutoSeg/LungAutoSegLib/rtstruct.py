"""DICOM RTSTRUCT read and write through rt-utils (with the project's fixes applied).

The border between rt-utils' mask layout ``mask[row, column, slice]`` and the
project's ``array[k, j, i]`` is here and nowhere else. Both sort slices by position
along the slice normal, so slice n of one is slice n of the other.

Writing takes rt-utils' structure set, ROI and observation datasets but traces the
contours itself, with the same OpenCV call (outer and hole contours, simple chain
approximation): rt-utils writes coordinates at full float precision, 17-18 characters,
over the 16 that DICOM allows a DS value, and walks the mask across its slowest axis
(4.3 s for two lungs on a 512x512x130 CT; 0.9 s here).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from rt_utils import RTStruct, RTStructBuilder, ds_helper
from rt_utils.utils import ROIData

from . import rtutils_fixes
from .atomic import atomic_path
from .dicom_io import DicomCT
from .errors import InputError
from .structures import STRUCTURES

CONTOUR_DATA = pydicom.tag.Tag(0x3006, 0x0050)


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
        roi = ROIData(mask=None, color=list(known.colour) if known else None, name=name,
                      number=len(rtstruct.ds.StructureSetROISequence) + 1,
                      frame_of_reference_uid=rtstruct.frame_of_reference_uid,
                      roi_generation_algorithm=generation_algorithm)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = roi.color
        roi_contour.ContourSequence = contour_sequence(ct, mask)
        roi_contour.ReferencedROINumber = roi.number
        rtstruct.ds.ROIContourSequence.append(roi_contour)
        rtstruct.ds.StructureSetROISequence.append(ds_helper.create_structure_set_roi(roi))
        rtstruct.ds.RTROIObservationsSequence.append(ds_helper.create_rtroi_observation(roi))
    with atomic_path(path, overwrite=overwrite) as temporary:
        rtstruct.ds.save_as(temporary)
    return path


def contour_sequence(ct: DicomCT, mask: np.ndarray) -> Sequence:
    """Closed planar contours in LPS mm of ``mask`` (``array[k, j, i]``), slice by slice."""
    ijk_to_lps = ct.volume.ijk_to_lps
    contours = Sequence()
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        traced, _ = cv2.findContours(mask[k].astype(np.uint8), cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)
        for points in traced:  # (x, y) = (column i, row j)
            ij = points.reshape(-1, 2).astype(np.float64)
            lps = ij @ ijk_to_lps[:3, :2].T + (k * ijk_to_lps[:3, 2] + ijk_to_lps[:3, 3])
            contours.append(_contour(ct.datasets[k], lps))
    return contours


def _contour(ct_slice: Dataset, lps: np.ndarray) -> Dataset:
    image = Dataset()
    image.ReferencedSOPClassUID = ct_slice.SOPClassUID
    image.ReferencedSOPInstanceUID = ct_slice.SOPInstanceUID
    contour = Dataset()
    contour.ContourImageSequence = Sequence([image])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(lps)
    contour[CONTOUR_DATA] = _encoded_ds(lps.ravel())
    # Marked as already in rt-utils' encoding (implicit VR little endian), so pydicom writes
    # the encoded text as it is; with any other encoding it decodes it first, still correctly.
    contour.set_original_encoding(True, True, default_encoding)
    return contour


def _encoded_ds(values: np.ndarray) -> RawDataElement:
    """ContourData as its encoded DS text: pydicom would otherwise build and check one Python
    object per coordinate (150k for two lungs on a 512x512x130 CT, 0.6 s). Four decimals
    (0.1 um) keep every value within DS's 16 characters."""
    text = "\\".join(f"{value:.4f}" for value in values).encode("ascii")
    text += b" " * (len(text) % 2)  # DICOM values have even length
    return RawDataElement(CONTOUR_DATA, "DS", len(text), text, 0, True, True)
