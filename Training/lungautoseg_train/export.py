"""Export DICOM CT + RTSTRUCT to aligned NIfTI image/label pairs for training.

Every CT series under a root (any depth) is a case; its RTSTRUCT is the one that
references it by UID, wherever it lies. Images and labels are written with the CT's
own geometry (never bare arrays: the tutorial this project grew from trained on labels
transposed against their images). A bad case is skipped with its reason; the rest goes
on. A re-run only does cases whose inputs or settings changed.
"""
from __future__ import annotations

import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from LungAutoSegLib.atomic import atomic_path
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.dicom_scan import DicomScan, RTStructInfo, SeriesInfo, scan_dicom
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.image_io import write_volume
from LungAutoSegLib.rtstruct import read_roi_masks
from LungAutoSegLib.structures import AliasTable

from .dataset_files import DATASET_NAME, LABELLED_SEPARATOR, REPORT_NAME

IGNORE_MARGIN_MM = 5.0  # tumour ROIs are ignored with this margin around them (RTOG 1106 excludes the GTV)


@dataclass(frozen=True)
class Exclusion:
    """Tumour ROIs (glob patterns on ROI names, case-insensitive) cut out of every structure
    and written, dilated by ``margin_mm``, as the case's ignore mask."""

    patterns: tuple[str, ...] = ()
    margin_mm: float = IGNORE_MARGIN_MM

    def matches(self, roi_names: list[str]) -> list[str]:
        return [n for n in roi_names if any(fnmatch.fnmatch(n.lower(), p.lower()) for p in self.patterns)]


@dataclass
class CaseJob:
    case: str
    series: SeriesInfo
    rtstructs: list[RTStructInfo]
    fingerprint: str = ""


@dataclass
class CaseResult:
    case: str
    patient: str
    series_uid: str
    status: str  # exported | skipped | failed
    reason: str = ""
    rtstruct: str = ""
    matched: dict[str, str] = field(default_factory=dict)  # structure -> ROI name used
    recognised: dict[str, str] = field(default_factory=dict)  # every ROI name -> its structure
    missing: list[str] = field(default_factory=list)  # requested structures this RTSTRUCT lacks: unlabelled
    labelled: list[str] = field(default_factory=list)  # requested structures it has (in the label map)
    warnings: list[str] = field(default_factory=list)
    image: str = ""
    label: str = ""
    ignore: str = ""  # ignore/<case>.nii.gz when tumour ROIs were excluded
    excluded: list[str] = field(default_factory=list)  # the tumour ROIs cut out
    fingerprint: str = ""
    worker_pid: int = 0
    seconds: float = 0.0
    reused: bool = False


class CaseSkipped(Exception):
    """This case cannot be exported; the message is the reason reported."""


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "case"


def _case_names(patients: list[str]) -> dict[str, str]:
    """A file-safe name per PatientID; IDs that clean up to the same name ('LUNG 01', 'LUNG/01',
    two names in Japanese script) each get a short hash of the ID, so no patient vanishes."""
    cleaned = {patient: _safe_name(patient) for patient in patients}
    counts = Counter(cleaned.values())
    return {patient: name if counts[name] == 1 else f"{name}_{hashlib.sha1(patient.encode()).hexdigest()[:6]}"
            for patient, name in cleaned.items()}


def plan_cases(scan: DicomScan) -> list[CaseJob]:
    """One job per CT series; a patient with several CTs gets numbered cases."""
    by_patient: dict[str, list[SeriesInfo]] = {}
    for series in scan.ct_series():
        by_patient.setdefault(series.patient_id or series.uid, []).append(series)
    names = _case_names(list(by_patient))
    jobs = []
    for patient, series_list in by_patient.items():
        for n, series in enumerate(series_list, start=1):
            case = names[patient] + (f"_{n}" if len(series_list) > 1 else "")
            jobs.append(CaseJob(case, series, scan.rtstructs_for(series)))
    return jobs


def _fingerprint(job: CaseJob, rois: list[str], aliases: AliasTable, exclusion: Exclusion) -> str:
    digest = hashlib.sha256()
    for path in sorted([*job.series.files, *(r.path for r in job.rtstructs)]):
        stat = path.stat()
        digest.update(f"{path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    digest.update(json.dumps(rois).encode())
    digest.update(aliases.fingerprint().encode())
    digest.update(json.dumps(asdict(exclusion)).encode())
    return digest.hexdigest()


def _choose_rtstruct(job: CaseJob, result: CaseResult) -> RTStructInfo:
    if not job.rtstructs:
        raise CaseSkipped("no RTSTRUCT references this CT series")
    chosen = max(job.rtstructs, key=lambda r: (r.date_time, str(r.path)))
    if len(job.rtstructs) > 1:
        result.warnings.append(
            f"{len(job.rtstructs)} RTSTRUCTs reference this CT; used the newest, {chosen.path}"
        )
    result.rtstruct = str(chosen.path)
    return chosen


def _match_rois(rtstruct: RTStructInfo, rois: list[str], aliases: AliasTable, result: CaseResult):
    result.recognised = {
        name: structure for name in rtstruct.roi_names if (structure := aliases.identify(name))
    }
    for roi in rois:
        names = aliases.match(roi, rtstruct.roi_names)
        if not names:
            result.missing.append(roi)
        elif len(names) > 1 and names[0] != roi:
            raise CaseSkipped(f"{roi} is ambiguous: ROIs {names} all match it")
        else:
            result.matched[roi] = names[0]


def _label_map(masks: dict[str, np.ndarray], rois: list[str], result: CaseResult) -> np.ndarray:
    """uint8 label: value n for the n-th requested structure (an unlabelled one's value is absent);
    the first one wins an overlap."""
    label = np.zeros(next(iter(masks.values())).shape, dtype=np.uint8)
    for roi, mask in masks.items():
        value = rois.index(roi) + 1
        overlap = int(np.count_nonzero(mask & (label != 0)))
        if overlap:
            result.warnings.append(f"{roi} overlaps an earlier structure in {overlap} voxels")
        label[mask & (label == 0)] = value
    return label


def _ignore_mask(tumour: np.ndarray, spacing_kji, margin_mm: float) -> np.ndarray:
    """The tumour and every voxel within ``margin_mm`` of it (Euclidean, in mm)."""
    from scipy import ndimage

    if margin_mm <= 0:
        return tumour.copy()
    return ndimage.distance_transform_edt(~tumour, sampling=spacing_kji) <= margin_mm


def _exclude_tumour(tumours: dict[str, np.ndarray], spacing_kji, masks: dict[str, np.ndarray],
                    exclusion: Exclusion, result: CaseResult) -> np.ndarray | None:
    """Cut the tumour ROIs' masks out of every mask; the ignore mask, or None when no ROI matched."""
    if not exclusion.patterns:
        return None
    if not tumours:
        result.warnings.append(f"no ROI matches --exclude-roi {', '.join(exclusion.patterns)}: nothing ignored")
        return None
    tumour = np.logical_or.reduce(list(tumours.values()))
    for mask in masks.values():
        mask &= ~tumour
    result.excluded = list(tumours)
    return _ignore_mask(tumour, spacing_kji, exclusion.margin_mm)


def export_case(job: CaseJob, rois: list[str], aliases: AliasTable, out: Path,
                exclusion: Exclusion = Exclusion()) -> CaseResult:
    started = time.perf_counter()
    result = CaseResult(job.case, job.series.patient_id, job.series.uid, "exported",
                        fingerprint=job.fingerprint, worker_pid=os.getpid())
    try:
        rtstruct = _choose_rtstruct(job, result)
        _match_rois(rtstruct, rois, aliases, result)
        absent = rtstruct.referenced_sop_uids - job.series.sop_uids
        if absent:
            raise CaseSkipped(
                f"RTSTRUCT references {len(absent)} slices that are missing from the CT series "
                f"({len(job.series.sop_uids)} slices present)"
            )
        if not result.matched:
            raise CaseSkipped(f"missing ROIs: {', '.join(result.missing)} (RTSTRUCT has {rtstruct.roi_names})")
        if result.missing:  # a partial label: the missing ones are unlabelled, not background
            result.warnings.append(f"not contoured, left unlabelled: {', '.join(result.missing)}")
        result.labelled = [roi for roi in rois if roi in result.matched]
        ct = read_dicom_ct(job.series.files)
        result.warnings += ct.volume.warnings
        tumour_names = exclusion.matches(rtstruct.roi_names)
        wanted = list(dict.fromkeys([result.matched[r] for r in result.labelled] + tumour_names))
        roi_masks = read_roi_masks(rtstruct.path, ct, wanted)  # one read of the RTSTRUCT for all
        result.warnings += roi_masks.warnings
        masks = {roi: roi_masks.masks[result.matched[roi]].copy() for roi in result.labelled}
        empty = [roi for roi, mask in masks.items() if not mask.any()]
        if empty:
            raise CaseSkipped(f"ROIs with no voxel on the CT: {', '.join(empty)}")
        ignore = _exclude_tumour({n: roi_masks.masks[n] for n in tumour_names}, ct.volume.spacing[::-1], masks,
                                 exclusion, result)
        label = _label_map(masks, rois, result)
        result.image = f"images/{job.case}.nii.gz"
        result.label = f"labels/{job.case}.nii.gz"
        write_volume(ct.volume, out / result.image)
        write_volume(ct.volume.with_array(label), out / result.label)
        if ignore is not None:
            result.ignore = f"ignore/{job.case}.nii.gz"
            write_volume(ct.volume.with_array(ignore.astype(np.uint8)), out / result.ignore)
    except CaseSkipped as reason:
        result.status, result.reason = "skipped", str(reason)
    except InputError as error:
        result.status, result.reason = "skipped", str(error)
    except Exception as error:  # a bad case must not stop a night's export
        result.status, result.reason = "failed", f"{type(error).__name__}: {error}"
    result.seconds = round(time.perf_counter() - started, 3)
    return result


def _previous_results(out: Path) -> dict[str, dict]:
    try:
        report = json.loads((out / REPORT_NAME).read_text())
        return {case["case"]: case for case in report.get("cases", [])}
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return {}


def _reusable(previous: dict | None, job: CaseJob, out: Path) -> CaseResult | None:
    """The earlier result of this case if its inputs and settings are unchanged and its files exist."""
    if not previous or previous.get("fingerprint") != job.fingerprint:
        return None
    try:
        result = CaseResult(**{**previous, "reused": True})
    except TypeError:  # a report written by another version: redo the case
        return None
    if result.status == "exported":
        files = [result.image, result.label] + ([result.ignore] if result.ignore else [])
        return result if all((out / name).is_file() for name in files) else None
    return result if result.status == "skipped" else None


def assign_folds(patients: list[str], folds: int, seed: int) -> dict[str, int]:
    """Seeded patient-level folds: every case of a patient lands in the same fold."""
    unique = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(unique))
    return {unique[n]: position % folds for position, n in enumerate(order)}


def _write_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def _write_dataset_csv(out: Path, results: list[CaseResult], folds: int, seed: int) -> int:
    exported = [r for r in results if r.status == "exported"]
    fold_of = assign_folds([r.patient or r.case for r in exported], folds, seed)
    text = io.StringIO()  # csv quotes a PatientID that holds a comma
    table = csv.writer(text, lineterminator="\n")
    table.writerow(["case", "patient", "image", "label", "fold", "ignore", "labelled"])
    for r in sorted(exported, key=lambda r: r.case):
        table.writerow([r.case, r.patient, r.image, r.label, fold_of[r.patient or r.case], r.ignore,
                        LABELLED_SEPARATOR.join(r.labelled)])
    _write_atomic(out / DATASET_NAME, text.getvalue())
    return len(exported)


def run_export(dicom_root, rois: list[str], out, *, aliases_file=None, folds: int = 5,
               seed: int = 0, workers: int | None = None, progress: bool = True,
               exclusion: Exclusion = Exclusion()) -> dict:
    """Export every case under ``dicom_root``; returns the report (also written to OUT)."""
    dicom_root, out = Path(dicom_root), Path(out)
    if not rois:
        raise InputError("name at least one --roi")
    if folds < 1:
        raise InputError(f"--folds must be at least 1, got {folds}")
    if not 0 <= exclusion.margin_mm <= 50:
        raise InputError(f"--ignore-margin-mm must lie in 0..50 mm, got {exclusion.margin_mm}")
    aliases = AliasTable.from_file(aliases_file)
    scan = scan_dicom(dicom_root)
    jobs = plan_cases(scan)
    if not jobs:
        found = sorted({s.modality for s in scan.series.values()})
        raise InputError(
            "no DICOM CT series found" + (f" (only {', '.join(found)})" if found else ""), dicom_root
        )
    for folder in ("images", "labels") + (("ignore",) if exclusion.patterns else ()):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for job in jobs:
        job.fingerprint = _fingerprint(job, rois, aliases, exclusion)

    previous = _previous_results(out)
    results = {job.case: reused for job in jobs
               if (reused := _reusable(previous.get(job.case), job, out)) is not None}
    todo = [job for job in jobs if job.case not in results]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    bar = tqdm(total=len(todo), desc="export", unit="case", disable=not progress)
    if workers == 1:
        for job in todo:
            results[job.case] = export_case(job, rois, aliases, out, exclusion)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(export_case, job, rois, aliases, out, exclusion) for job in todo]
            for future in futures:
                result = future.result()
                results[result.case] = result
                bar.update()
    bar.close()

    ordered = [results[job.case] for job in jobs]
    exported = _write_dataset_csv(out, ordered, folds, seed)
    report = {
        "dicom_root": str(dicom_root),
        "rois": rois,
        "exclude_rois": list(exclusion.patterns),
        "ignore_margin_mm": exclusion.margin_mm,
        "folds": folds,
        "seed": seed,
        "workers": workers,
        "summary": {
            "cases": len(ordered),
            "exported": exported,
            "partially_labelled": sum(r.status == "exported" and bool(r.missing) for r in ordered),
            "skipped": sum(r.status == "skipped" for r in ordered),
            "failed": sum(r.status == "failed" for r in ordered),
            "reused": sum(r.reused for r in ordered),
            "unreadable_files": len(scan.unreadable),
        },
        "unreadable_files": [str(p) for p in scan.unreadable[:50]],
        "cases": [asdict(r) for r in ordered],
    }
    _write_atomic(out / REPORT_NAME, json.dumps(report, indent=2))
    return report
