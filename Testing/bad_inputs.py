"""A corpus of bad inputs, written with the phantom and pydicom: what hospitals send.

Each entry writes one patient (a DICOM CT series plus an RTSTRUCT, as export wants it, or a
volume file) under a folder and spoils it in one way. ``segment`` and ``export`` say what
each command must answer: the words its one error message must contain, or None where the
input is fine for segment (``note`` says why).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.uid import generate_uid

import thorax_phantom as tp
from LungAutoSegLib.image_io import write_volume

GRID = dict(shape_ijk=(64, 56, 12), spacing=(5.6, 6.0, 10.0), orientation="axial")


@dataclass
class Written:
    segment_input: Path       # what `lungautoseg segment` is given
    export_root: Path | None  # what `lungautoseg-train export --dicom-root` is given


@dataclass
class BadInput:
    name: str
    write: Callable[[Path], Written]
    segment: tuple[str, ...] | None   # words of segment's error; None: segment must succeed
    export: tuple[str, ...] | None    # words of the reason export skips the case for
    note: str = ""
    dicom: bool = True                # export reads DICOM only


def patient(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """A phantom patient (CT + RTSTRUCT, the LCTSC layout); returns (patient folder, CT folder)."""
    phantom = tp.render(tp.make_anatomy(seed), tp.make_grid(**GRID))
    folder = tp.write_case(root / "dicom", f"BAD-{seed:03d}", phantom)
    ct = next(p.parent for p in sorted(folder.rglob("*.dcm"))
              if pydicom.dcmread(p, stop_before_pixels=True).Modality == "CT")
    return folder, ct


def ct_slices(ct_folder: Path) -> list[Path]:
    return sorted(ct_folder.iterdir())


def edit(files, change) -> None:
    """Rewrite each file after ``change(index, dataset)``."""
    for index, path in enumerate(files):
        ds = pydicom.dcmread(path)
        change(index, ds)
        ds.save_as(path)


def _spoiled(change) -> Callable[[Path], Written]:
    """A writer: the phantom patient with ``change(ct_folder)`` applied to its CT."""
    def write(root: Path) -> Written:
        _, ct = patient(root)
        change(ct)
        return Written(ct, root / "dicom")
    return write


def _empty(root: Path) -> Written:
    (root / "dicom").mkdir(parents=True)
    return Written(root / "dicom", root / "dicom")


def _not_dicom(root: Path) -> Written:
    folder = root / "dicom" / "P"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("plan notes, not a CT")
    (folder / "image.dcm").write_bytes(b"\x00" * 200 + b"not DICOM at all")
    return Written(folder, root / "dicom")


def _duplicate(ct: Path) -> None:
    ds = pydicom.dcmread(ct_slices(ct)[5])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(ct / "copy.dcm")


def _two_series(root: Path) -> Written:
    _, ct = patient(root)
    other = tp.render(tp.make_anatomy(1), tp.make_grid(**GRID))
    tp.write_ct_series(other.ct, ct.parent / "second_series", "BAD-000",
                       pydicom.dcmread(ct_slices(ct)[0]).StudyInstanceUID)
    return Written(ct.parent, root / "dicom")


def _uneven(ct: Path) -> None:
    def squeeze(index, ds):
        if index > 6:
            ds.ImagePositionPatient[2] -= 3.0
    edit(ct_slices(ct), squeeze)


def _tilt(ct: Path) -> None:
    edit(ct_slices(ct), lambda n, ds: ds.ImagePositionPatient.__setitem__(
        1, ds.ImagePositionPatient[1] + n * np.tan(np.radians(15)) * 10.0))


def _single_slice(ct: Path) -> None:
    for path in ct_slices(ct)[1:]:
        path.unlink()


def _truncated(ct: Path) -> None:
    victim = ct_slices(ct)[3]
    victim.write_bytes(victim.read_bytes()[:2000])


def _pixel_spacing(value) -> Callable[[Path], None]:
    def change(ct: Path) -> None:
        def set_spacing(n, ds):
            if value is None:
                del ds.PixelSpacing
            else:
                ds.PixelSpacing = value
        edit(ct_slices(ct), set_spacing)
    return change


def _rescale(keyword: str, value: str) -> Callable[[Path], None]:
    """One slice's rescale set to ``value`` (a NaN or an infinity written as DICOM text)."""
    def change(ct: Path) -> None:
        path = ct_slices(ct)[4]
        ds = pydicom.dcmread(path)
        ds[keyword].value = value  # DS text: pydicom would refuse to format a non-finite float itself
        ds.save_as(path)
    return change


def _other_frame(root: Path) -> Written:
    folder, ct = patient(root)
    rtstruct = next(p for p in folder.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    ds = pydicom.dcmread(rtstruct)
    stranger = generate_uid()
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = stranger
    for roi in ds.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = stranger
    ds.save_as(rtstruct)
    return Written(ct, root / "dicom")


def _lungs_on_other_frame(root: Path) -> Written:
    """The RTSTRUCT on the CT's frame, but its lung ROIs say they were drawn on another scan's."""
    folder, ct = patient(root)
    rtstruct = next(p for p in folder.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    ds = pydicom.dcmread(rtstruct)
    stranger = generate_uid()
    for roi in ds.StructureSetROISequence:
        if roi.ROIName.startswith("Lung"):
            roi.ReferencedFrameOfReferenceUID = stranger
    ds.save_as(rtstruct)
    return Written(ct, root / "dicom")


def _nifti_nan(root: Path) -> Written:
    phantom = tp.render(tp.make_anatomy(0), tp.make_grid(**GRID))
    array = phantom.ct.array.astype(np.float32)
    array[4, 20:30, 20:30] = np.nan  # a hole a converter left
    path = root / "ct_with_nan.nii.gz"
    root.mkdir(parents=True, exist_ok=True)
    write_volume(phantom.ct.with_array(array), path)
    return Written(path, None)


def _huge_nrrd(root: Path) -> Written:
    """A NRRD header claiming 2048x2048x1500 voxels (6.3 G) over an empty data file: only the
    header may be read."""
    path = root / "huge.nrrd"
    root.mkdir(parents=True, exist_ok=True)
    (root / "huge.raw").write_bytes(b"")
    path.write_text("NRRD0004\ntype: short\ndimension: 3\nspace: left-posterior-superior\n"
                    "sizes: 2048 2048 1500\nspace directions: (0.3,0,0) (0,0.3,0) (0,0,0.5)\n"
                    "space origin: (0,0,0)\nkinds: domain domain domain\nendian: little\n"
                    "encoding: raw\ndata file: huge.raw\n")
    return Written(path, None)


CORPUS = [
    BadInput("empty folder", _empty, ("no DICOM CT series",), ("no DICOM CT series",)),
    BadInput("non-DICOM files", _not_dicom, ("no DICOM CT series",), ("no DICOM CT series",)),
    BadInput("MR series", _spoiled(lambda ct: edit(ct_slices(ct), lambda n, ds: setattr(ds, "Modality", "MR"))),
             ("no DICOM CT series", "MR"), ("no DICOM CT series", "MR")),
    BadInput("missing slice", _spoiled(lambda ct: ct_slices(ct)[5].unlink()), ("missing slice",), ("missing",)),
    BadInput("duplicated slice positions", _spoiled(_duplicate), ("duplicated slice positions",),
             ("duplicated slice positions",)),
    BadInput("two CT series in one folder", _two_series, ("2 CT series found", "--series"),
             ("no RTSTRUCT references this CT series",),
             "export takes the series its RTSTRUCT references and reports the other as skipped"),
    BadInput("uneven slice spacing", _spoiled(_uneven), ("uneven slice spacing",), ("uneven slice spacing",)),
    BadInput("gantry tilt", _spoiled(_tilt), ("gantry tilt",), ("gantry tilt",)),
    BadInput("a single 2D slice", _spoiled(_single_slice), ("1 slice",), ("missing from the CT series",),
             "export: the RTSTRUCT's other slices are missing"),
    BadInput("truncated DICOM file among good ones", _spoiled(_truncated), ("CT.0004.dcm", "cannot"),
             ("CT.0004.dcm", "cannot")),
    BadInput("pixel spacing 0", _spoiled(_pixel_spacing([0, 0.7])), ("PixelSpacing",), ("PixelSpacing",)),
    BadInput("pixel spacing negative", _spoiled(_pixel_spacing([-1, 0.7])), ("PixelSpacing",), ("PixelSpacing",)),
    BadInput("pixel spacing missing", _spoiled(_pixel_spacing(None)), ("PixelSpacing",), ("PixelSpacing",)),
    BadInput("non-orthonormal orientation", _spoiled(lambda ct: edit(ct_slices(ct), lambda n, ds: setattr(
        ds, "ImageOrientationPatient", [1, 0, 0, 0.3, 1, 0]))), ("not orthonormal",), ("not orthonormal",)),
    BadInput("one slice's RescaleIntercept NaN", _spoiled(_rescale("RescaleIntercept", "NaN")),
             ("RescaleIntercept", "CT.0005.dcm"), ("RescaleIntercept", "CT.0005.dcm")),
    BadInput("one slice's RescaleSlope infinite", _spoiled(_rescale("RescaleSlope", "Infinity")),
             ("RescaleSlope", "CT.0005.dcm"), ("RescaleSlope",)),
    BadInput("RTSTRUCT on another frame of reference", _other_frame, None, ("frame of reference",),
             "segment reads no RTSTRUCT: it contours the CT"),
    BadInput("lung ROIs on another frame of reference", _lungs_on_other_frame, None,
             ("ROI 'Lung_R' lies on frame of reference", "registration"), "segment reads no RTSTRUCT: it contours the CT"),
    BadInput("NIfTI with NaNs", _nifti_nan, ("NaN",), None, dicom=False),
    BadInput("huge CT (2048x2048x1500 header)", _huge_nrrd, ("would need", "GB"), None, dicom=False),
]
