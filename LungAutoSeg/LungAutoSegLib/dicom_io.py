"""DICOM CT series: read one onto the project's geometry (found by ``dicom_scan``).

A series is chosen by Modality and SeriesInstanceUID, never by folder name. Slices
are sorted by their position along the slice normal (row x column direction), so the
order of files and InstanceNumbers does not matter. A series that cannot be put on a
regular grid (missing or duplicated slices, uneven spacing, gantry tilt) is refused:
resampling it silently would put contours in the wrong place.
"""
from __future__ import annotations

import copy
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from .dicom_scan import ENHANCED_CT_STORAGE, read_dataset, scan_dicom
from .errors import InputError
from .memory import check_fits
from .volume import Volume, is_orthonormal

# Slice spacing may deviate from the median by this much (mm, or fraction of it,
# whichever is larger) before the series is called uneven: scanners write positions
# rounded to a few micrometres.
SPACING_TOL_MM = 0.01
SPACING_TOL_FRACTION = 0.01
TILT_TOL_DEGREES = 0.1


@dataclass
class DicomCT:
    """A CT read from DICOM: the volume and the sorted slice headers (no pixel data)."""

    volume: Volume
    datasets: list[Dataset]

    @property
    def series_uid(self) -> str:
        return self.datasets[0].SeriesInstanceUID

    @property
    def sop_uids(self) -> list[str]:
        return [ds.SOPInstanceUID for ds in self.datasets]


def read_dicom_ct(source, series_uid: str | None = None) -> DicomCT:
    """Read one CT series from a folder (any depth) or a list of files.

    ``series_uid`` chooses among several CT series; without it, several is an error
    that lists them.
    """
    if isinstance(source, (str, os.PathLike)):
        scan = scan_dicom(source)
        label = Path(source)
        candidates = scan.ct_series()
        if series_uid is not None:
            chosen = [s for s in candidates if s.uid == series_uid]
            if not chosen and candidates:
                listing = "; ".join(f"{s.uid} ({len(s.files)} slices, '{s.description}')" for s in candidates)
                raise InputError(f"no CT series with --series {series_uid} here; the CT series found: {listing}",
                                 label)
            candidates = chosen
        if not candidates:
            other = sorted({s.modality for s in scan.series.values()})
            found = f" (found {', '.join(other)} series only)" if other else ""
            raise InputError(f"no DICOM CT series{found}", label)
        if len(candidates) > 1:
            listing = "; ".join(
                f"{s.uid} ({len(s.files)} slices, '{s.description}')" for s in candidates
            )
            raise InputError(
                f"{len(candidates)} CT series found, choose one with --series UID: {listing}", label
            )
        files, notes = candidates[0].files, candidates[0].notes
    else:
        files, notes = [Path(f) for f in source], []
        label = files[0].parent if files else Path(".")
    ct = _read_series_files(files, label)
    if len(notes) > 3:  # a whole copied series: one line says it
        notes = [f"{len(notes)} files are copies of others in the series (same SOPInstanceUID and bytes): each "
                 f"read once (e.g. {notes[0].split(' is a copy')[0]})"]
    ct.volume.warnings[:0] = notes
    return ct


def _read_series_files(files: list[Path], label: Path) -> DicomCT:
    try:
        return _interpret_series(files, label)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError) as error:
        # Headers are untrusted: a value of the wrong type or size that no check above
        # foresaw still ends as a clear refusal, not a traceback (found by fuzzing).
        raise InputError(f"invalid DICOM header ({type(error).__name__}: {error})", label) from error


def _interpret_series(files: list[Path], label: Path) -> DicomCT:
    _check_memory(files, label)
    datasets = []
    for path in files:
        try:
            datasets.append(read_dataset(path))
        except Exception as error:  # pydicom raises many types on a damaged file
            raise InputError(f"cannot read DICOM file ({error})", path) from error
    if not datasets:
        raise InputError("no DICOM files", label)
    for ds, path in zip(datasets, files):
        modality = ds.get("Modality", "")
        if modality != "CT":
            raise InputError(f"not a CT image (Modality '{modality}')", path)
    series = {ds.SeriesInstanceUID for ds in datasets}
    if len(series) > 1:
        raise InputError(f"files of {len(series)} series mixed: {sorted(series)}", label)
    notes = []
    if any(ds.SOPClassUID == ENHANCED_CT_STORAGE for ds in datasets):
        if len(datasets) > 1:
            raise InputError(f"{len(datasets)} Enhanced CT files in one series: one multi-frame file expected",
                             label)
        datasets, files, pixels = enhanced_frames(datasets[0], files[0])
    else:
        datasets, files, notes = _without_localizers(datasets, files, label)
        pixels = None
    _check_one_frame_of_reference(datasets, label)
    geometry = _slice_geometry(datasets, files, label)
    order = np.argsort(geometry.positions)
    datasets = [datasets[n] for n in order]
    files = [files[n] for n in order]
    positions = geometry.positions[order]
    slice_spacing = _check_slice_spacing(positions, datasets[0], label)
    _check_no_tilt(datasets, geometry, label)

    affine = np.eye(4)
    affine[:3, 0] = geometry.row_direction * geometry.column_spacing
    affine[:3, 1] = geometry.column_direction * geometry.row_spacing
    affine[:3, 2] = geometry.normal * slice_spacing
    affine[:3, 3] = np.asarray(datasets[0].ImagePositionPatient, dtype=np.float64)
    array = _stack_hounsfield(datasets, files, None if pixels is None else pixels[order])
    for ds in datasets:
        if "PixelData" in ds:
            del ds.PixelData  # keep headers only: RTSTRUCT writing needs UIDs, not pixels
    warnings = notes + ([] if len(datasets) > 1 else [
        f"single-slice series: slice spacing {slice_spacing:g} mm taken from the header"
    ])
    return DicomCT(Volume(array, affine, warnings=warnings), datasets)


def _without_localizers(datasets, files, label):
    """Scout images (ImageType ... LOCALIZER) that scanners put into the CT series are left out."""
    scouts = [n for n, ds in enumerate(datasets) if "LOCALIZER" in [str(v).upper() for v in ds.get("ImageType", [])]]
    if not scouts:
        return datasets, files, []
    if len(scouts) == len(datasets):
        raise InputError("the series holds only localizer (scout) images, no CT slices", label)
    keep = sorted(set(range(len(datasets))) - set(scouts))
    note = f"{len(scouts)} localizer (scout) image(s) in the series left out: {files[scouts[0]].name}"
    return [datasets[n] for n in keep], [files[n] for n in keep], [note]


def _check_one_frame_of_reference(datasets, label) -> None:
    """A repeat scan stored under one SeriesInstanceUID: two volumes, not one to interleave."""
    counts = Counter(str(ds.get("FrameOfReferenceUID", "")) for ds in datasets)
    if len(counts) > 1:
        listing = ", ".join(f"{uid or '(none)'} ({n} slices)" for uid, n in sorted(counts.items()))
        raise InputError(f"one series holds slices on {len(counts)} frames of reference, a repeat scan under "
                         f"one SeriesInstanceUID: {listing}; separate them (e.g. by FrameOfReferenceUID) "
                         "before contouring", label)


def _check_memory(files: list[Path], label: Path) -> None:
    """From the first header: a series too big for memory is refused before any pixel is read."""
    if not files:
        return
    try:
        first = read_dataset(files[0], headers_only=True)
        rows, columns = int(first.Rows), int(first.Columns)
        frames = int(first.get("NumberOfFrames", 1) or 1)
    except Exception:  # unreadable or incomplete: the full read below says what is wrong
        return
    check_fits((columns, rows, len(files) * frames), label)


@dataclass
class _SliceGeometry:
    row_direction: np.ndarray
    column_direction: np.ndarray
    normal: np.ndarray
    row_spacing: float  # between rows: PixelSpacing[0], along the column direction
    column_spacing: float  # between columns: PixelSpacing[1], along the row direction
    positions: np.ndarray  # of each slice along the normal, in file order


def _required(ds: Dataset, keyword: str, path: Path):
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(f"missing {keyword}", path)
    return value


def _numbers(ds: Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    """A multi-valued numeric header as ``count`` finite floats, or a clear refusal."""
    value = _required(ds, keyword, path)
    try:
        numbers = np.asarray([float(v) for v in (value if isinstance(value, (list, tuple, pydicom.multival.MultiValue))
                                                  else [value])], dtype=np.float64)
    except (TypeError, ValueError):
        numbers = np.array([])
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise InputError(f"invalid {keyword} {value!r}: must be "
                         f"{'a finite number' if count == 1 else f'{count} finite numbers'}", path)
    return numbers


def _slice_geometry(datasets, files, label) -> _SliceGeometry:
    first, first_path = datasets[0], files[0]
    orientation = _numbers(first, "ImageOrientationPatient", 6, first_path)
    spacing = _numbers(first, "PixelSpacing", 2, first_path)
    if np.any(spacing <= 0):
        raise InputError(f"invalid PixelSpacing {list(spacing)}", first_path)
    row_direction, column_direction = orientation[:3], orientation[3:]
    normal = np.cross(row_direction, column_direction)
    if not is_orthonormal(np.stack([row_direction, column_direction, normal], axis=1)):
        raise InputError(
            f"ImageOrientationPatient {list(orientation)} is not orthonormal", first_path
        )
    shape = (first.get("Rows"), first.get("Columns"))
    positions = []
    for ds, path in zip(datasets, files):
        if not np.allclose(_numbers(ds, "ImageOrientationPatient", 6, path), orientation, atol=1e-4):
            raise InputError("slices of the series have different orientations", path)
        if not np.allclose(_numbers(ds, "PixelSpacing", 2, path), spacing):
            raise InputError("slices of the series have different pixel spacings", path)
        if (ds.get("Rows"), ds.get("Columns")) != shape:
            raise InputError("slices of the series have different sizes", path)
        positions.append(np.dot(normal, _numbers(ds, "ImagePositionPatient", 3, path)))
    return _SliceGeometry(row_direction, column_direction, normal,
                          float(spacing[0]), float(spacing[1]), np.asarray(positions))


def _check_slice_spacing(positions: np.ndarray, first: Dataset, label) -> float:
    if len(positions) == 1:
        spacing = first.get("SpacingBetweenSlices") or first.get("SliceThickness")
        if not spacing or float(spacing) <= 0:
            raise InputError("single slice with no SliceThickness: its thickness is unknown", label)
        return float(spacing)
    gaps = np.diff(positions)
    duplicated = np.flatnonzero(gaps < SPACING_TOL_MM)
    if len(duplicated):
        at = ", ".join(f"{positions[n]:.2f}" for n in duplicated[:5])
        raise InputError(f"{len(duplicated)} duplicated slice positions (at {at} mm along the normal)", label)
    typical = float(np.median(gaps))
    tolerance = max(SPACING_TOL_MM, SPACING_TOL_FRACTION * typical)
    missing = np.flatnonzero(gaps > 1.5 * typical)
    if len(missing):
        where = ", ".join(f"{positions[n]:.2f} to {positions[n + 1]:.2f}" for n in missing[:5])
        count = int(sum(round(gaps[n] / typical) - 1 for n in missing))
        raise InputError(
            f"about {count} missing slice(s): gap of more than {typical:g} mm between {where} mm", label
        )
    uneven = np.flatnonzero(np.abs(gaps - typical) > tolerance)
    if len(uneven):
        raise InputError(
            f"uneven slice spacing: {gaps.min():.3f} to {gaps.max():.3f} mm (typical {typical:.3f} mm)",
            label,
        )
    return float((positions[-1] - positions[0]) / (len(positions) - 1))


def _check_no_tilt(datasets, geometry: _SliceGeometry, label) -> None:
    tilt_tag = float(datasets[0].get("GantryDetectorTilt", 0) or 0)
    if len(datasets) > 1:
        first = np.asarray(datasets[0].ImagePositionPatient, float)
        last = np.asarray(datasets[-1].ImagePositionPatient, float)
        step = last - first
        along = np.dot(step, geometry.normal)
        across = np.linalg.norm(step - along * geometry.normal)
        tilt = np.degrees(np.arctan2(across, abs(along)))
    else:
        tilt = abs(tilt_tag)
    if tilt > TILT_TOL_DEGREES:
        raise InputError(
            f"gantry tilt of {tilt:.1f} degrees: slices are not stacked along their normal", label
        )


def _stack_hounsfield(datasets, files, pixels: np.ndarray | None = None) -> np.ndarray:
    """HU of every slice; ``pixels`` are the stored values when already decoded (Enhanced CT)."""
    slopes = [_rescale(ds, "RescaleSlope", 1.0, path) for ds, path in zip(datasets, files)]
    intercepts = [_rescale(ds, "RescaleIntercept", 0.0, path) for ds, path in zip(datasets, files)]
    integral = all(s.is_integer() for s in slopes) and all(c.is_integer() for c in intercepts)
    dtype = np.int16 if integral else np.float32
    first = datasets[0]
    array = np.empty((len(datasets), int(first.Rows), int(first.Columns)), dtype=dtype)
    for n, (ds, path) in enumerate(zip(datasets, files)):
        stored = _decoded(ds, path) if pixels is None else pixels[n]
        hu = stored.astype(np.float32) * slopes[n] + intercepts[n]
        if integral:
            hu = np.clip(hu, np.iinfo(np.int16).min, np.iinfo(np.int16).max)
        array[n] = hu
    return array


def _rescale(ds: Dataset, keyword: str, absent: float, path: Path) -> float:
    """A slice's rescale slope or intercept; a NaN, an infinity or a zero slope would turn the
    slice into a wrong answer (a NaN slice reads as 0 HU once written), so it is refused."""
    if ds.get(keyword) in (None, ""):
        return absent
    value = float(_numbers(ds, keyword, 1, path)[0])
    if keyword == "RescaleSlope" and value == 0:
        raise InputError("invalid RescaleSlope 0: every voxel would read the same", path)
    return value


def _decoded(ds: Dataset, path: Path) -> np.ndarray:
    """The stored pixel values; a compression with no decoder installed is one clear line."""
    try:
        return ds.pixel_array
    except Exception as error:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            raise InputError(f"cannot decode pixel data compressed as {syntax.name} ({syntax}): "
                             f"{str(error).strip().splitlines()[0]} (the decoders come with "
                             "'pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle')",
                             path) from error
        raise InputError(f"cannot decode pixel data ({str(error).strip().splitlines()[0]})", path) from error


FRAME_GROUPS = ("PixelMeasuresSequence", "PlaneOrientationSequence", "PixelValueTransformationSequence")


def _frame_attribute(ds: Dataset, frame: Dataset, group: str, keyword: str, path: Path):
    """An attribute of one frame of an Enhanced CT: per-frame functional group, else shared."""
    for groups in (frame, ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]):
        for item in groups.get(group, []):
            if keyword in item:
                return item.get(keyword)
    raise InputError(f"Enhanced CT frame without {keyword} (in {group})", path)


def enhanced_frames(ds: Dataset, path: Path) -> tuple[list[Dataset], list[Path], np.ndarray]:
    """An Enhanced (multi-frame) CT as one header per frame, carrying that frame's position,
    orientation, spacing and rescale from the functional groups, and ``frame_number`` (1-based)
    for references; and the frames' stored pixel values."""
    frames = ds.get("PerFrameFunctionalGroupsSequence", [])
    if not frames or len(frames) != int(ds.get("NumberOfFrames", 0) or 0):
        raise InputError("Enhanced CT without one per-frame functional group per frame", path)
    top = Dataset()
    for element in ds:
        if element.keyword not in ("PixelData", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            top.add(element)
    headers = []
    for number, frame in enumerate(frames, start=1):
        header = copy.deepcopy(top)  # Dataset(top) would share top's elements
        header.ImagePositionPatient = _frame_attribute(ds, frame, "PlanePositionSequence", "ImagePositionPatient", path)
        header.ImageOrientationPatient = _frame_attribute(ds, frame, "PlaneOrientationSequence",
                                                          "ImageOrientationPatient", path)
        header.PixelSpacing = _frame_attribute(ds, frame, "PixelMeasuresSequence", "PixelSpacing", path)
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            try:
                setattr(header, keyword, _frame_attribute(ds, frame, "PixelValueTransformationSequence", keyword, path))
            except InputError:
                pass  # absent: slope 1, intercept 0
        header.frame_number = number  # not a DICOM attribute: what references to this frame cite
        headers.append(header)
    pixels = _decoded(ds, path)
    return headers, [path] * len(headers), pixels.reshape(len(headers), int(ds.Rows), int(ds.Columns))
