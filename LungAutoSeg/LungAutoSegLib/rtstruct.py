"""DICOM RTSTRUCT read and write on the CT ``Volume``'s own geometry.

Reading rasterises contours by the standard rule (``contours``: voxel centre inside the
slice's polygons, even-odd, repeated outlines dropped), placing each contour on a slice by
its position, so RTSTRUCTs without ContourImageSequence work too.

Writing takes rt-utils' structure set, ROI and observation datasets but traces the
contours itself (``contours.trace_slice``: re-reading gives back exactly the mask):
rt-utils writes coordinates at full float precision, 17-18 characters, over the 16 that
DICOM allows a DS value, and walks the mask across its slowest axis.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from rt_utils import RTStruct, RTStructBuilder, ds_helper
from rt_utils.utils import ROIData

from .atomic import atomic_path
from .contours import drop_repeats, fill_even_odd, trace_slice
from .dicom_io import DicomCT
from .errors import InputError
from .structures import STRUCTURES
from .volume import Volume

CONTOUR_DATA = pydicom.tag.Tag(0x3006, 0x0050)
# A contour more than this fraction of a slice away from a slice centre lies between slices.
PLANE_TOL_SLICES = 0.25


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


def contours_to_mask(volume: Volume, contour_sequence) -> tuple[np.ndarray, list[str]]:
    """Rasterise an ROI's contours onto ``volume``'s grid (``array[k, j, i]``) by the standard
    rule (``contours.fill_even_odd``); also notes on contours that were left out."""
    polygons: dict[int, list[np.ndarray]] = {}
    unplaced = 0
    for contour in contour_sequence:
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue  # points and open lines enclose nothing
        points = np.reshape(np.asarray(contour.ContourData, dtype=np.float64), (-1, 3))
        ijk = volume.lps_to_ijk(points)
        plane = float(np.mean(ijk[:, 2]))
        k = int(round(plane))
        if len(points) < 3 or abs(plane - k) > PLANE_TOL_SLICES or not 0 <= k < volume.array.shape[0]:
            unplaced += len(points) >= 3
            continue
        polygons.setdefault(k, []).append(ijk[:, :2])
    mask = np.zeros(volume.array.shape, dtype=bool)
    repeats = 0
    for k, slice_polygons in polygons.items():
        kept, dropped = drop_repeats(slice_polygons, volume.spacing[:2])
        repeats += dropped
        mask[k] = fill_even_odd(kept, volume.array.shape[1:])
    notes = [f"{unplaced} contours lie on no slice of the CT"] if unplaced else []
    if repeats:
        notes.append(f"{repeats} repeated outlines dropped (the same polygon drawn again on its slice)")
    return mask, notes


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
        mask, placement = contours_to_mask(ct.volume, contours or [])
        result.warnings += [f"{name}: {note}" for note in placement]
        result.masks[name] = mask
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
        for ij in trace_slice(mask[k]):
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
