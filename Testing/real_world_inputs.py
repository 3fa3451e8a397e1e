"""DICOM as scanners, PACS and anonymisers really send it: a corpus the tests write with pydicom.

A sibling of bad_inputs.py. Each entry writes one phantom patient (CT series + RTSTRUCT) and
changes it the way real exports do. Some must contour exactly like the clean CT (``segment``
is None): stripped Type 2 attributes, names in other character sets, compressed pixel data,
Enhanced CT, a scout in the series, a mixed RT folder, a linked sub-folder. Others must be
refused with one line (``segment`` lists its words): two frames of reference in one series, no
frame of reference, a compression nothing can decode.
"""
from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, JPEGLosslessSV1, JPEGLSLossless,
                         RLELossless, UID, generate_uid)

from bad_inputs import ct_slices, edit, patient
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.rtstruct import read_roi_masks, write_rtstruct

ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


@dataclass
class RealInput:
    name: str
    write: Callable[[Path], Path]            # writes under root; returns what segment is given
    segment: tuple[str, ...] | None = None   # words of the one error line; None: contour as the clean CT
    tolerance: float = 0.0                   # allowed relative volume difference from the clean CT
    export: tuple[str, ...] | None = None    # words of the reason export skips it; None: exported as clean


def _patient(root: Path, change: Callable[[Path], None] | None = None) -> Path:
    _, ct = patient(root)
    if change:
        change(ct)
    return ct


def _drop(*keywords: str) -> Callable[[Path], Path]:
    def write(root: Path) -> Path:
        return _patient(root, lambda ct: edit(ct_slices(ct), lambda n, ds: [delattr(ds, k) for k in keywords if k in ds]))
    return write


def _names(charset, name: str) -> Callable[[Path], Path]:
    def change(n, ds):
        ds.SpecificCharacterSet, ds.PatientName = charset, name
        ds.InstitutionName = "Hôpital Saint-Éloi" if charset == "ISO_IR 192" else "病院"
    return lambda root: _patient(root, lambda ct: edit(ct_slices(ct), change))


def _two_frames(root: Path) -> Path:
    second = generate_uid()
    return _patient(root, lambda ct: edit(ct_slices(ct), lambda n, ds: setattr(ds, "FrameOfReferenceUID", second)
                                          if n % 2 else None))


def _linked_subfolder(root: Path) -> Path:
    ct = _patient(root)
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    for path in ct_slices(ct)[6:]:
        shutil.move(str(path), elsewhere / path.name)
    os.symlink(elsewhere, ct / "more_slices", target_is_directory=True)
    return ct


def _scout(root: Path) -> Path:
    """A lateral localizer in the CT series, as scanners store it."""
    ct = _patient(root)
    ds = pydicom.dcmread(ct_slices(ct)[0])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.InstanceNumber = 0
    ds.save_as(ct / "CT.scout.dcm")
    return ct


def _mixed_rt_folder(root: Path) -> Path:
    """CT, RTSTRUCT, RTPLAN and a one-file RTDOSE together in one folder."""
    folder, ct = patient(root)
    rtstruct = next(p for p in folder.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    shutil.move(str(rtstruct), ct / "RS.dcm")
    first = pydicom.dcmread(ct_slices(ct)[0])
    for modality, sop_class in (("RTPLAN", "1.2.840.10008.5.1.4.1.1.481.5"), ("RTDOSE", "1.2.840.10008.5.1.4.1.1.481.2")):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = sop_class, meta.MediaStorageSOPInstanceUID, modality
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID"):
            setattr(ds, keyword, first.get(keyword))
        ds.SeriesInstanceUID = generate_uid()
        if modality == "RTDOSE":
            ds.ImagePositionPatient, ds.ImageOrientationPatient = first.ImagePositionPatient, first.ImageOrientationPatient
            ds.PixelSpacing, ds.Rows, ds.Columns, ds.NumberOfFrames = [4.0, 4.0], 8, 8, 4
            ds.GridFrameOffsetVector = [0, 5, 10, 15]
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.PixelData = np.zeros((4, 8, 8), np.uint16).tobytes()
        ds.save_as(ct / f"{modality}.dcm", enforce_file_format=True)
    return ct


def jpeg_lossless_sv1(image: np.ndarray) -> bytes:
    """A JPEG Lossless (process 14, first-order prediction) codestream of a 16-bit image: no
    library here encodes it, so the test writes it. One Huffman table, 5-bit codes for the 17
    difference categories."""
    rows, columns = image.shape
    x = image.astype(np.uint16).astype(np.int64)
    prediction = np.empty_like(x)
    prediction[0, 0] = 1 << 15
    prediction[0, 1:] = x[0, :-1]
    prediction[1:, 0] = x[:-1, 0]
    prediction[1:, 1:] = x[1:, :-1]
    difference = (x - prediction) % 65536
    difference = np.where(difference >= 32768, difference - 65536, difference).ravel()
    category = np.zeros(difference.shape, np.int64)
    nonzero = difference != 0
    category[nonzero] = np.floor(np.log2(np.abs(difference[nonzero]))).astype(np.int64) + 1
    extra_bits = np.where(category == 16, 0, category)
    extra = np.where(difference > 0, difference, difference + (1 << extra_bits) - 1) & ((1 << extra_bits) - 1)
    value, length = (category << extra_bits) | extra, 5 + extra_bits
    which = np.repeat(np.arange(len(value)), length)
    position = np.arange(len(which)) - np.repeat(np.cumsum(length) - length, length)
    bits = (value[which] >> (length[which] - 1 - position)) & 1
    bits = np.concatenate([bits, np.ones((-len(bits)) % 8, np.int64)])  # pad with 1-bits
    data = np.packbits(bits.astype(np.uint8)).tobytes().replace(b"\xff", b"\xff\x00")
    marker = lambda code, body: b"\xff" + bytes([code]) + (len(body) + 2).to_bytes(2, "big") + body  # noqa: E731
    sof = bytes([16]) + rows.to_bytes(2, "big") + columns.to_bytes(2, "big") + bytes([1, 1, 0x11, 0])
    dht = bytes([0x00]) + bytes([0, 0, 0, 0, 17] + [0] * 11) + bytes(range(17))
    sos = bytes([1, 1, 0x00, 1, 0, 0x00])
    return b"\xff\xd8" + marker(0xC4, dht) + marker(0xC3, sof) + marker(0xDA, sos) + data + b"\xff\xd9"


def _jpeg_baseline(ds: Dataset) -> None:
    """8-bit JPEG Baseline (lossy): HU stored in 8 HU steps, quality 95, encoded by Pillow."""
    from PIL import Image

    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    stored = np.clip(np.round((hu + 1024) / 8), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, "JPEG", quality=95)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.RescaleSlope, ds.RescaleIntercept = 8, -1024
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _compressed(syntax: UID) -> Callable[[Path], Path]:
    def change(n, ds):
        if syntax == JPEGLosslessSV1:
            ds.PixelData = encapsulate([jpeg_lossless_sv1(ds.pixel_array)])
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax == JPEGBaseline8Bit:
            _jpeg_baseline(ds)
        else:
            ds.compress(syntax, generate_instance_uid=False)  # pyjpegls, pylibjpeg-openjpeg, pydicom RLE
    return lambda root: _patient(root, lambda ct: edit(ct_slices(ct), change))


def _undecodable(root: Path) -> Path:
    """Pixel data in a transfer syntax no installed plugin decodes (MPEG2, a video syntax)."""
    def change(n, ds):
        ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")
    return _patient(root, lambda ct: edit(ct_slices(ct), change))


def enhanced_ct(source_slices: list[Path], path: Path) -> None:
    """The slices of a classic CT series as one Enhanced CT file with per-frame functional groups."""
    slices = sorted((pydicom.dcmread(p) for p in source_slices), key=lambda ds: int(ds.InstanceNumber))
    first = slices[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ENHANCED_CT, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    for keyword in ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
                    "SeriesInstanceUID", "FrameOfReferenceUID", "StudyDate", "StudyTime", "StudyID",
                    "AccessionNumber", "Modality", "Rows", "Columns", "SamplesPerPixel",
                    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, keyword, first.get(keyword))
    ds.SOPClassUID, ds.SOPInstanceUID = ENHANCED_CT, meta.MediaStorageSOPInstanceUID
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames = len(slices)
    shared = Dataset()
    measures, orientation = Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = first.PixelSpacing, first.SliceThickness
    orientation.ImageOrientationPatient = first.ImageOrientationPatient
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for number, frame_slice in enumerate(slices, start=1):
        frame, position, rescale, content = Dataset(), Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = frame_slice.ImagePositionPatient
        # per frame, as some scanners store it: rescale differs between frames here
        rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = -1024 - number, 1, "HU"
        content.InStackPositionNumber, content.StackID = number, "1"
        frame.PlanePositionSequence, frame.PixelValueTransformationSequence = [position], [rescale]
        frame.FrameContentSequence = [content]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    pixels = np.stack([s.pixel_array.astype(np.int32) + n for n, s in enumerate(slices, start=1)])
    ds.PixelData = pixels.astype(np.int16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def _enhanced(root: Path) -> Path:
    """The CT as one Enhanced CT file, and the RTSTRUCT redrawn on it (citing frame numbers)."""
    folder, ct = patient(root)
    rtstruct = next(p for p in folder.rglob("*.dcm") if pydicom.dcmread(p, stop_before_pixels=True).Modality == "RTSTRUCT")
    masks = read_roi_masks(rtstruct, read_dicom_ct(ct), ["Lung_R", "Lung_L"]).masks
    files = ct_slices(ct)
    enhanced_ct(files, ct / "enhanced.dcm")
    for path in files:
        path.unlink()
    write_rtstruct(read_dicom_ct(ct), masks, rtstruct, overwrite=True)
    return ct


def _bare_datasets(root: Path) -> Path:
    """Every slice and the RTSTRUCT without preamble and file meta, implicit VR little endian, as
    old archives and some anonymisers write them."""
    folder, ct = patient(root)
    for path in folder.rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.file_meta, ds.preamble = FileMetaDataset(), None
        pydicom.dcmwrite(path, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    return ct


def _copied_series(root: Path) -> Path:
    """The same series twice in the tree: the CT folder copied beside itself, file for file."""
    _, ct = patient(root)
    shutil.copytree(ct, ct.parent / "copy of CT")
    return ct.parent


CORPUS = [
    RealInput("no StudyID", _drop("StudyID")),
    RealInput("no StudyDate or StudyTime", _drop("StudyDate", "StudyTime", "SeriesDate", "SeriesTime")),
    RealInput("names in UTF-8 (ISO_IR 192)", _names("ISO_IR 192", "Müller^Jörg=山田^太郎")),
    RealInput("names in ISO 2022 IR 87", _names(["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎")),
    RealInput("slices in a linked sub-folder", _linked_subfolder),
    RealInput("a localizer inside the CT series", _scout),
    RealInput("CT + RTSTRUCT + RTPLAN + RTDOSE in one folder", _mixed_rt_folder),
    RealInput("JPEG Lossless (process 14, SV1)", _compressed(JPEGLosslessSV1)),
    RealInput("JPEG-LS lossless", _compressed(JPEGLSLossless)),
    RealInput("JPEG 2000 lossless", _compressed(JPEG2000Lossless)),
    RealInput("RLE lossless", _compressed(RLELossless)),
    RealInput("JPEG Baseline 8-bit (lossy)", _compressed(JPEGBaseline8Bit), tolerance=0.01),
    RealInput("Enhanced CT (multi-frame)", _enhanced),
    RealInput("no preamble or file meta (implicit VR little endian)", _bare_datasets),
    RealInput("the same series copied twice into the folder tree", _copied_series),
    RealInput("two frames of reference in one series", _two_frames, ("2 frames of reference", "repeat scan"),
              export=("2 frames of reference",)),
    # export places the contours by geometry; only an RTSTRUCT written onto the CT needs the frame
    RealInput("no FrameOfReferenceUID", _drop("FrameOfReferenceUID"), ("no FrameOfReferenceUID",)),
    RealInput("pixel data no decoder can read (MPEG2)", _undecodable, ("cannot decode", "MPEG2", "CT.00"),
              export=("cannot decode", "MPEG2")),
]
