"""DICOM in a folder tree: every series and RTSTRUCT indexed by UID from headers alone.

Series are told apart by SeriesInstanceUID and RTSTRUCTs matched to them by the UIDs they
reference, never by folder or file name: clinics and PACS lay folders out every way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import InputError

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"  # multi-frame: one file, per-frame geometry
RTSTRUCT_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"


@dataclass
class SeriesInfo:
    """One image series found by a scan (headers only)."""

    uid: str
    modality: str
    patient_id: str
    study_uid: str
    frame_of_reference_uid: str
    description: str
    files: list[Path] = field(default_factory=list)
    sop_uids: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)  # what the scan decided (copies read once)


@dataclass
class RTStructInfo:
    """One RTSTRUCT found by a scan, with what it says it references."""

    path: Path
    sop_uid: str
    patient_id: str
    frame_of_reference_uids: set[str]
    referenced_series_uids: set[str]
    referenced_sop_uids: set[str]
    roi_names: list[str]
    date_time: str


@dataclass
class DicomScan:
    series: dict[str, SeriesInfo] = field(default_factory=dict)
    rtstructs: list[RTStructInfo] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)

    def ct_series(self) -> list[SeriesInfo]:
        return sorted(
            (s for s in self.series.values() if s.modality == "CT"),
            key=lambda s: (s.patient_id, s.study_uid, s.uid),
        )

    def rtstructs_for(self, series: SeriesInfo) -> list[RTStructInfo]:
        """RTSTRUCTs that reference this series by UID (or, lacking that, by frame of reference)."""
        by_series = [r for r in self.rtstructs if series.uid in r.referenced_series_uids]
        if by_series:
            return by_series
        return [
            r
            for r in self.rtstructs
            if not r.referenced_series_uids
            and series.frame_of_reference_uid in r.frame_of_reference_uids
        ]


def _iter_files(root: Path):
    """Every file under ``root``, following symbolic links to folders (PACS exports and users
    link series in), each real folder once, so a link loop ends."""
    if root.is_file():
        yield root
        return
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()
        for name in sorted(names):
            yield Path(folder) / name


def read_dataset(path: Path, *, headers_only: bool = False) -> Dataset:
    """A DICOM file, also one written without the preamble and file meta (old archives and
    some anonymisers write the bare dataset, implicit VR little endian): read forced, it must
    carry a SOPClassUID, and its transfer syntax is the encoding it parsed with."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=headers_only)
    except InvalidDicomError:
        ds = pydicom.dcmread(path, stop_before_pixels=headers_only, force=True)
        if "SOPClassUID" not in ds:
            raise
        implicit, little = ds.original_encoding
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        return ds


def _read_header(path: Path) -> Dataset | None:
    try:
        return read_dataset(path, headers_only=True)
    except Exception:  # pydicom raises many types on a damaged or foreign file: not DICOM to us
        return None


def _rtstruct_info(path: Path, ds: Dataset) -> RTStructInfo:
    frames, series_uids, sop_uids = set(), set(), set()
    for frame in ds.get("ReferencedFrameOfReferenceSequence", []):
        frames.add(str(frame.get("FrameOfReferenceUID", "")))
        for study in frame.get("RTReferencedStudySequence", []):
            for series in study.get("RTReferencedSeriesSequence", []):
                series_uids.add(str(series.get("SeriesInstanceUID", "")))
                for image in series.get("ContourImageSequence", []):
                    sop_uids.add(str(image.get("ReferencedSOPInstanceUID", "")))
    return RTStructInfo(
        path=path,
        sop_uid=str(ds.get("SOPInstanceUID", "")),
        patient_id=str(ds.get("PatientID", "")),
        frame_of_reference_uids=frames,
        referenced_series_uids=series_uids,
        referenced_sop_uids=sop_uids,
        roi_names=[str(r.get("ROIName", "")) for r in ds.get("StructureSetROISequence", [])],
        date_time=f"{ds.get('StructureSetDate', '')}{ds.get('StructureSetTime', '')}",
    )


def scan_dicom(root: str | os.PathLike) -> DicomScan:
    """Index every DICOM file under ``root`` (any depth) by series; headers only."""
    root = Path(root)
    if not root.exists():
        raise InputError("no such file or folder", root)
    scan = DicomScan()
    for path in _iter_files(root):
        ds = _read_header(path)
        if ds is None or "SOPClassUID" not in ds:
            scan.unreadable.append(path)
            continue
        if ds.SOPClassUID == RTSTRUCT_STORAGE or ds.get("Modality") == "RTSTRUCT":
            scan.rtstructs.append(_rtstruct_info(path, ds))
            continue
        enhanced = ds.SOPClassUID == ENHANCED_CT_STORAGE
        if "SeriesInstanceUID" not in ds or ("ImagePositionPatient" not in ds and not enhanced):
            continue  # plans, doses, reports: not image slices
        uid = str(ds.SeriesInstanceUID)
        info = scan.series.get(uid)
        if info is None:
            info = scan.series[uid] = SeriesInfo(
                uid=uid,
                modality=str(ds.get("Modality", "")),
                patient_id=str(ds.get("PatientID", "")),
                study_uid=str(ds.get("StudyInstanceUID", "")),
                frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
                description=str(ds.get("SeriesDescription", "")),
            )
        sop_uid = str(ds.get("SOPInstanceUID", ""))
        if sop_uid in info.sop_uids and _same_file_as(path, info):
            info.notes.append(f"{path} is a copy of another file of the series (same SOPInstanceUID and bytes): "
                              "read once")
            continue
        info.files.append(path)
        info.sop_uids.add(sop_uid)
    return scan


def _same_file_as(path: Path, info: SeriesInfo) -> bool:
    """Whether ``path`` holds the very bytes of a file already in the series (a copied folder)."""
    data = path.read_bytes()
    return any(other.stat().st_size == len(data) and other.read_bytes() == data for other in info.files)
