"""DICOM RTSTRUCT read and write on the CT ``Volume``'s own geometry.

Both directions go through the ``Volume``'s own voxel <-> LPS mapping (``to_ijk``, ``to_lps``),
the one the CT was read with. Reading rasterises contours by the standard rule (``contours``:
voxel centre inside the slice's polygons, even-odd, repeated outlines dropped), placing each
contour on a slice by its position, so RTSTRUCTs without ContourImageSequence work too.

Writing builds the structure set itself (its header copied from the CT: patient, study,
character set) and traces each slice a quarter voxel inside the mask's boundary
(``contours.trace_slice``), so re-reading by the same rule gives back exactly the mask; its
coordinates are written with four decimals, within the 16 characters DICOM allows a DS value.
"""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .atomic import atomic_path
from .contours import drop_repeats, fill_even_odd, trace_slice
from .dicom_io import DicomCT
from .dicom_scan import RTSTRUCT_STORAGE, read_dataset
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
        ds = read_dataset(Path(path))
    except Exception as error:
        raise InputError(f"not a valid RTSTRUCT ({error})", path) from error
    if ds.get("SOPClassUID") != RTSTRUCT_STORAGE or "StructureSetROISequence" not in ds:
        raise InputError(f"not a valid RTSTRUCT (SOP class {ds.get('SOPClassUID', 'missing')}, "
                         f"modality {ds.get('Modality', 'missing')})", path)
    return ds


def _contour_sequence(ds: Dataset, roi_number) -> list:
    for roi_contour in ds.get("ROIContourSequence", []):
        if str(roi_contour.get("ReferencedROINumber")) == str(roi_number):
            return list(roi_contour.get("ContourSequence", []))
    return []  # an ROI without contours is an empty ROI


def contours_to_mask(volume: Volume, contour_sequence) -> tuple[np.ndarray, list[str]]:
    """Rasterise an ROI's contours onto ``volume``'s grid (``array[k, j, i]``) by the standard
    rule (``contours.fill_even_odd``); also notes on contours that were left out."""
    polygons: dict[int, list[np.ndarray]] = {}
    unplaced = 0
    for contour in contour_sequence:
        if contour.get("ContourGeometricType", "CLOSED_PLANAR") != "CLOSED_PLANAR":
            continue  # points and open lines enclose nothing
        points = np.reshape(np.asarray(contour.ContourData, dtype=np.float64), (-1, 3))
        ijk = volume.to_ijk(points)
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
    frames = {str(r.ROIName): str(r.get("ReferencedFrameOfReferenceUID", "") or "") for r in ds.StructureSetROISequence}
    result = RoiMasks({})
    for name in roi_names:
        if name not in numbers:
            raise InputError(f"no ROI named '{name}' (it has {sorted(numbers)})", path)
        if frame and frames[name] and frames[name] != frame:  # drawn on another scan: no registration given
            raise InputError(f"ROI '{name}' lies on frame of reference {frames[name]}, the CT on {frame}: its "
                             "contours cannot be placed without a registration", path)
        contours = _contour_sequence(ds, numbers[name])
        mask, placement = contours_to_mask(ct.volume, contours)
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
    description: str = "",
    uid_key: str | None = None,
) -> Path:
    """A new RTSTRUCT referencing every slice of ``ct``, one ROI per mask (``array[k, j, i]``).

    Known structures get their standard colour. The file appears only when complete.
    ``description``: the StructureSetDescription (e.g. the plausibility warnings). ``uid_key``:
    when given, the instance and series UIDs derive from it, so the same key always makes the
    same UIDs (the DICOM node keys by series and weights: a result sent twice is one result).
    """
    path = Path(path)
    if path.exists() and not overwrite:  # refuse before the slow part, not after it
        raise InputError("exists already (use --overwrite to replace it)", path)
    frame = ct.datasets[0].get("FrameOfReferenceUID")
    if not frame:  # an RTSTRUCT on an invented frame of reference would register to nothing
        source = getattr(ct.datasets[0], "filename", None)
        raise InputError("the CT series has no FrameOfReferenceUID: an RTSTRUCT cannot be placed on it",
                         Path(source).parent if source else path)
    ds = _structure_set(ct, frame, series_description, uid_key)
    if description:
        ds.StructureSetDescription = description[:1024]  # ST
    for number, (name, mask) in enumerate(masks.items(), start=1):
        if mask.shape != ct.volume.array.shape:
            raise ValueError(f"mask {name} has shape {mask.shape}, the CT {ct.volume.array.shape}")
        known = STRUCTURES.get(name)
        roi = Dataset()
        roi.ROINumber, roi.ReferencedFrameOfReferenceUID, roi.ROIName = number, frame, name
        roi.ROIGenerationAlgorithm = generation_algorithm
        ds.StructureSetROISequence.append(roi)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = list(known.colour) if known else [0, 200, 0]
        roi_contour.ContourSequence = contour_sequence(ct, mask)
        roi_contour.ReferencedROINumber = number
        ds.ROIContourSequence.append(roi_contour)
        observation = Dataset()
        observation.ObservationNumber, observation.ReferencedROINumber = number, number
        observation.RTROIInterpretedType = "ORGAN" if known else ""
        observation.ROIInterpreter = ""
        ds.RTROIObservationsSequence.append(observation)
    with atomic_path(path, overwrite=overwrite) as temporary:
        ds.save_as(temporary, enforce_file_format=True)
    return path


# Type 2 attributes copied from the CT: written empty when an anonymiser removed them.
STUDY_ATTRIBUTES = ("StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName",
                    "StudyDescription", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                    "PatientAge", "InstitutionName")


def uid_source(uid_key: str | None):
    """``new_uid(role)``: a fresh UID, or with ``uid_key`` the same UID for the same key and role
    every time (pydicom's hash-derived UIDs under its root)."""
    if uid_key is None:
        return lambda role: generate_uid()
    return lambda role: generate_uid(entropy_srcs=[uid_key, role])


def _structure_set(ct: DicomCT, frame: str, label: str, uid_key: str | None) -> FileDataset:
    """The RTSTRUCT's header: the CT's patient and study, a new series, every slice referenced."""
    first = ct.datasets[0]
    new_uid = uid_source(uid_key)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTSTRUCT_STORAGE
    meta.MediaStorageSOPInstanceUID = new_uid("instance")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    # the CT's character set, so names in any script stay what they are (ISO_IR 192, ISO 2022 IR 87)
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = RTSTRUCT_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality = "RTSTRUCT"
    for keyword in STUDY_ATTRIBUTES:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID, ds.SeriesNumber = new_uid("series"), 1
    ds.SeriesDescription, ds.StructureSetLabel = label[:64], label[:16]
    ds.InstanceNumber = 1
    ds.Manufacturer, ds.ManufacturerModelName = "LungAutoSeg", label
    ds.InstanceCreationDate = ds.StructureSetDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = ds.StructureSetTime = now.strftime("%H%M%S")
    ds.ApprovalStatus = "UNAPPROVED"
    series = Dataset()
    series.SeriesInstanceUID = first.SeriesInstanceUID
    series.ContourImageSequence = Sequence([_image_reference(d) for d in ct.datasets])
    study = Dataset()
    study.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired, customary)
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = Sequence([series])
    referenced = Dataset()
    referenced.FrameOfReferenceUID = frame
    referenced.RTReferencedStudySequence = Sequence([study])
    ds.ReferencedFrameOfReferenceSequence = Sequence([referenced])
    ds.StructureSetROISequence, ds.ROIContourSequence, ds.RTROIObservationsSequence = Sequence(), Sequence(), Sequence()
    return ds


def _image_reference(ct_slice: Dataset) -> Dataset:
    """A slice's reference; a frame of an Enhanced CT is its file plus the frame number."""
    image = Dataset()
    image.ReferencedSOPClassUID = ct_slice.SOPClassUID
    image.ReferencedSOPInstanceUID = ct_slice.SOPInstanceUID
    if getattr(ct_slice, "frame_number", None) is not None:
        image.ReferencedFrameNumber = ct_slice.frame_number
    return image


def contour_sequence(ct: DicomCT, mask: np.ndarray) -> Sequence:
    """Closed planar contours in LPS mm of ``mask`` (``array[k, j, i]``), slice by slice."""
    contours = Sequence()
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for ij in trace_slice(mask[k]):
            lps = ct.volume.to_lps(np.column_stack([ij, np.full(len(ij), k)]))
            contours.append(_contour(ct.datasets[k], lps))
    return contours


def _contour(ct_slice: Dataset, lps: np.ndarray) -> Dataset:
    contour = Dataset()
    contour.ContourImageSequence = Sequence([_image_reference(ct_slice)])
    contour.ContourGeometricType = "CLOSED_PLANAR"
    contour.NumberOfContourPoints = len(lps)
    contour[CONTOUR_DATA] = _encoded_ds(lps.ravel())
    # Marked as already in the file's encoding (explicit VR little endian; the digits are the
    # same in every character set), so pydicom writes the encoded text as it is.
    contour.set_original_encoding(False, True, default_encoding)
    return contour


def _encoded_ds(values: np.ndarray) -> RawDataElement:
    """ContourData as its encoded DS text: pydicom would otherwise build and check one Python
    object per coordinate (150k for two lungs on a 512x512x130 CT, 0.6 s). Four decimals
    (0.1 um) keep every value within DS's 16 characters. One %-format over all values: 3x
    faster than formatting each, the same text."""
    floats = values.tolist()
    text = (("%.4f\\" * len(floats)) % tuple(floats))[:-1].encode("ascii")
    text += b" " * (len(text) % 2)  # DICOM values have even length
    return RawDataElement(CONTOUR_DATA, "DS", len(text), text, 0, False, True)
