"""Batch runs: many CTs in one process, the model loaded once.

``lungautoseg segment A B C -o OUT`` or ``lungautoseg segment --batch ROOT -o OUT``. Each case's
outputs go to ``OUT/<patient>/<series>`` (a volume file: ``OUT/<file name>``), and
``OUT/summary.csv`` lists every case: status, volumes, warnings and seconds. A failing case is
written down and the next one runs. A case whose folder holds a report made with the same
weights is done already and is skipped (resume). ``--shard I/N`` takes every N-th case from the
I-th of the cases sorted by their key, so N machines of a job array cover a cohort once.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_path
from .errors import InputError
from .image_io import has_volume_suffix
from .progress import Progress

SUMMARY_NAME = "summary.csv"
SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Case:
    """One CT to contour: a DICOM series (``source`` a folder, ``series_uid``) or a volume file."""

    key: str                 # the case's output folder, relative, "/"-separated; sorts the cases
    source: Path
    series_uid: str | None = None


def safe_part(text: str, fallback: str) -> str:
    """``text`` as one path component: only letters, digits, '.', '_' and '-'. A name changed on
    the way gets a short hash of the original, so two patients "A/B" and "A_B" stay apart."""
    cleaned = SAFE.sub("_", text).strip("._")[:64] or fallback
    if cleaned != text:
        cleaned += "-" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cleaned


def find_cases(inputs: list[Path], batch_root: Path | None, output: Path) -> list[Case]:
    """The cases named (each input: a volume file, or a folder whose CT series all count), plus
    every CT series and volume file under ``batch_root``; sorted by key, each once. Nothing under
    ``output`` counts: a rerun must not contour its own results."""
    cases: dict[str, Case] = {}
    roots = [*inputs, *([batch_root] if batch_root is not None else [])]
    for root in roots:
        if not root.exists():
            raise InputError("no such file or folder", root)
        for case in _cases_under(root):
            if not _inside(case.source, output):
                cases.setdefault(case.key, case)
    if not cases:
        raise InputError("no CT series or volume file found", batch_root or (inputs[0] if inputs else None))
    return [cases[key] for key in sorted(cases)]


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _cases_under(root: Path) -> list[Case]:
    """A volume file's key mirrors its path below ``root``; a series' is patient/series UID."""
    from .dicom_scan import scan_dicom

    if root.is_file():
        return [Case(safe_part(root.name, "volume"), root)] if has_volume_suffix(root) else []
    found = [Case("/".join(safe_part(part, "volume") for part in p.relative_to(root).parts), p)
             for p in sorted(root.rglob("*")) if p.is_file() and has_volume_suffix(p)]
    for series in scan_dicom(root).ct_series():
        folder = Path(_common_folder(series.files))
        key = f"{safe_part(series.patient_id, 'no-patient-id')}/{safe_part(series.uid, 'no-series-uid')}"
        found.append(Case(key, folder, series.uid))
    return found


def _common_folder(files: list[Path]) -> str:
    """The deepest folder holding every file of a series (read there, not the whole root again)."""
    return os.path.commonpath([str(f.parent) for f in files])


def shard(cases: list[Case], spec: str | None) -> list[Case]:
    """``I/N`` (1 <= I <= N): the cases whose index in ``cases`` is I-1 modulo N."""
    if spec is None:
        return cases
    match = re.fullmatch(r"(\d+)/(\d+)", spec.strip())
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise InputError(f"--shard must be I/N with 1 <= I <= N, e.g. 2/8 (got {spec!r})")
    first, count = int(match[1]) - 1, int(match[2])
    return cases[first::count]


def _done_before(folder: Path, weights: str) -> dict | None:
    """The report of an earlier run into ``folder`` with the same weights, if there is one."""
    for path in folder.glob("*_report.json") if folder.is_dir() else ():
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if report.get("weights_sha256") == weights:
            return report
    return None


def run_batch(cases: list[Case], output: Path, *, model=None, structures=None, device="auto",
              bar: bool = True, dicom_seg: bool = False) -> list[dict]:
    """Contour every case into ``output``; returns the summary rows (also in summary.csv)."""
    from tqdm import tqdm

    from .engine_server import LoadedModels
    from .segment_command import run_segment

    models = LoadedModels()
    package, _ = models.get(model, device)
    weights = package.manifest["weights"]["sha256"]
    output.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for case in tqdm(cases, desc="cases", unit="case", disable=not bar):
        folder = output / Path(case.key)
        started = time.perf_counter()
        earlier = _done_before(folder, weights)
        if earlier is not None:
            rows.append(_row(case, "done earlier", earlier, 0.0))
        else:
            try:
                report = run_segment(case.source, folder, model=model, structures=structures, device=device,
                                     series_uid=case.series_uid, progress=Progress("none"), models=models,
                                     dicom_seg=dicom_seg)
                rows.append(_row(case, "done", report, time.perf_counter() - started))
            except InputError as error:
                rows.append(_row(case, "refused", {"warnings": [str(error)]}, time.perf_counter() - started))
            except Exception as error:  # noqa: BLE001 - one case's bug must not stop a night's cohort
                rows.append(_row(case, "failed", {"warnings": [f"{type(error).__name__}: {error}"]},
                                 time.perf_counter() - started))
        _write_summary(output / SUMMARY_NAME, rows)
    return rows


def _row(case: Case, status: str, report: dict, seconds: float) -> dict:
    volumes = "; ".join(f"{name} {facts['volume_ml']} ml" for name, facts in report.get("structures", {}).items())
    return {"case": case.key, "source": str(case.source), "series_uid": case.series_uid or "", "status": status,
            "volumes": volumes, "warnings": " | ".join(report.get("warnings", [])), "seconds": round(seconds, 2)}


def _write_summary(path: Path, rows: list[dict]) -> None:
    """The whole summary, replaced atomically after each case: an interrupted run keeps a true one."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path, overwrite=True) as temporary:
        Path(temporary).write_text(text.getvalue(), encoding="utf-8", newline="")
