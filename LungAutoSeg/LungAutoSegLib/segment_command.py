"""The ``lungautoseg segment`` command: a CT in, segment files and a report out.

Outputs, all named after the input so several CTs can share one folder:
``<name>.seg.nrrd`` (Slicer segmentation), ``<name>_labels.nii.gz``, for DICOM input
``<name>_rtstruct.dcm`` (referencing every slice of the series), ``<name>_report.json``,
``<name>_preview.png`` and, with ``review``, ``<name>_review.nrrd`` (``review.py``).
Existing outputs are refused unless ``overwrite``, before any
work starts. Every file is first written into a private staging folder inside the output
folder and renamed into place only when all of them are complete: a failure leaves no
output at all, and two runs writing into one folder never see each other's half files.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Collection
from pathlib import Path

import cv2
import numpy as np
import SimpleITK as sitk
from filelock import FileLock

from .atomic import TEMPORARY_NAME_EXTRA
from .errors import InputError
from .ct_reader import read_ct
from .image_io import VOLUME_SUFFIXES, has_volume_suffix, write_volume
from .model_package import load_package
from .plausibility import check as check_plausibility
from .progress import Progress
from .review import summary_lines as review_summary
from .volume import Volume, bounding_box

MIN_SLICES = 5  # fewer is not a 3D CT; the model saw slabs of 11 slices and more

OUTPUTS = {"segmentation": "{}.seg.nrrd", "labels": "{}_labels.nii.gz", "rtstruct": "{}_rtstruct.dcm",
           "report": "{}_report.json", "preview": "{}_preview.png", "review": "{}_review.nrrd",
           "dicom_seg": "{}_dicomseg.dcm"}


def output_name(source: Path) -> str:
    name = source.resolve().name
    for suffix in sorted(VOLUME_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _check_output_folder(folder: Path) -> list[Path]:
    """Before any work: the folder exists or can be made, and a file can be written in it
    (a real write, not permission bits, which an administrator's account or a read-only
    mount would make lie). Returns the folders it made, to be removed if the run fails."""
    try:  # Path.exists raises for a name the file system cannot hold (ENAMETOOLONG)
        if folder.exists() and not folder.is_dir():
            raise InputError("output path exists and is not a folder", folder)
        made = [p for p in (folder, *folder.parents) if not p.exists()]
    except OSError as error:
        raise InputError(f"output folder cannot be made ({error.strerror or error})", folder) from None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        _remove_made(made)
        raise InputError(f"output folder is not writable ({error.strerror or error})", folder) from None
    return made


def _remove_made(made: list[Path]) -> None:
    """Remove the folders a failed run made (deepest first), if they hold nothing else."""
    for folder in made:
        try:
            (folder / ".lungautoseg.lock").unlink(missing_ok=True)
            folder.rmdir()
        except OSError:
            return  # never made, or something else is in it now: keep it


def _select(package, requested: list[str] | None) -> list[dict]:
    if not requested:
        return package.structures
    unknown = [name for name in requested if name not in package.structure_names]
    if unknown:
        raise InputError(f"model {package.name} has no structure {', '.join(unknown)} "
                         f"(it has {', '.join(package.structure_names)})")
    return [s for s in package.structures if s["name"] in requested]


def _structure_report(mask: np.ndarray, spacing) -> dict:
    box = bounding_box(mask)
    if box is None:
        return {"volume_ml": 0.0, "slices": None, "components": 0}
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask[box].astype(np.uint8)), True)
    return {"volume_ml": round(float(mask[box].sum()) * float(np.prod(spacing)) / 1000, 1),
            "slices": [box[0].start, box[0].stop - 1],  # first and last slice index (k) holding it
            "components": int(sitk.GetArrayViewFromImage(components).max())}


def run_segment(source, output_dir, *, model=None, structures: list[str] | None = None, device: str = "auto",
                series_uid: str | None = None, overwrite: bool = False, progress: Progress | None = None,
                review: bool = False, models=None, uid_key: str | None = None, dicom_seg: bool = False,
                files: Collection[str] | None = None) -> dict:
    """Segment ``source`` into ``output_dir``; on any failure, no output and no folder it made is left.
    ``models``: an ``engine_server.LoadedModels`` that keeps packages and networks between runs.
    ``uid_key``: the RTSTRUCT's (and DICOM SEG's) UIDs derive from it (``write_rtstruct``).
    ``dicom_seg``: a DICOM SEG beside the RTSTRUCT (DICOM input only; needs highdicom).
    ``files``: the ``OUTPUTS`` keys to write beside the report (None: every one that applies);
    the Slicer module asks for what it loads, not the NIfTI labels and the preview."""
    source, output_dir = Path(source), Path(output_dir)
    if not source.exists():
        raise InputError("no such file or folder", source)
    made = _check_output_folder(output_dir)
    try:
        return _run_segment(source, output_dir, model, structures, device, series_uid, overwrite,
                            progress or Progress("none"), review, models, uid_key, dicom_seg, files)
    except BaseException:
        _remove_made(made)
        raise


def segment_with_events(progress, source, output, **options) -> dict:
    """``run_segment``, its end always told on ``progress``: the result, or the error (then raised)."""
    try:
        report = run_segment(source, output, progress=progress, **options)
    except InputError as error:
        progress.error(str(error), error.path)
        raise
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: the stream still ends with its last word
        progress.error(f"cancelled: {interrupt.args[0] if interrupt.args else 'interrupted (Ctrl-C)'}",
                       cancelled=True)
        raise
    except Exception as error:  # a bug: still end the JSON-lines stream with an error object
        progress.error(f"internal error: {type(error).__name__}: {error}")
        raise
    progress.result({"report": report["outputs"]["report"], "outputs": report["outputs"],
                     "structures": report["structures"], "seconds": report["seconds"],
                     "warnings": report["warnings"], "review": report.get("review")})
    return report


def _run_segment(source: Path, output_dir: Path, model, structures, device, series_uid, overwrite,
                 progress: Progress, review: bool, models, uid_key, dicom_seg: bool, files) -> dict:
    from .inference import predict

    started, timings = time.perf_counter(), {}
    package, network = models.get(model, device) if models is not None else (load_package(model), None)
    opened = round(time.perf_counter() - started, 3)  # reading, verifying (and, warm, loading) the package
    chosen = _select(package, structures)
    name = output_name(source)
    is_dicom = source.is_dir() or not has_volume_suffix(source)
    wanted = {"rtstruct": is_dicom, "review": review, "dicom_seg": is_dicom and dicom_seg}
    planned = {key: output_dir / pattern.format(name) for key, pattern in OUTPUTS.items()
               if wanted.get(key, True) and (files is None or key in files or key == "report")}
    _check_names(planned, source)
    _refuse_existing(planned, overwrite, output_dir)

    progress.stage("read", 0.0, f"reading {source}")
    lap = time.perf_counter()
    loaded = read_ct(source, series_uid)
    ct, dicom = loaded.volume, loaded.dicom
    timings["read"] = round(time.perf_counter() - lap, 3)
    if dicom is not None and not dicom.datasets[0].get("FrameOfReferenceUID"):
        raise InputError("the CT series has no FrameOfReferenceUID, so no RTSTRUCT could be registered to it "
                         "(convert it to NRRD or NIfTI to contour it without one)", source)
    if ct.shape_ijk[2] < MIN_SLICES:
        raise InputError(f"the CT has {ct.shape_ijk[2]} slice(s): contouring needs a 3D CT of at least "
                         f"{MIN_SLICES} slices", source)

    result = predict(ct, package, device=device, network=network, with_review=review,
                     structures=[s["name"] for s in chosen],
                     progress=lambda stage, done: progress.stage(stage, 0.05 + 0.8 * done, f"{stage} done"))
    timings.update(result.timings)
    timings["load_model"] = round(timings.get("load_model", 0.0) + opened, 3)
    labels = _keep(result.labels, chosen)

    progress.stage("write", 0.85, f"writing into {output_dir}")
    from .segmentation_io import write_seg_nrrd

    lap = time.perf_counter()
    masks = {s["name"]: labels.array == s["label"] for s in chosen}  # once, for the report, checks and RTSTRUCT
    structure_reports = {name: _structure_report(mask, labels.spacing) for name, mask in masks.items()}
    plausibility = check_plausibility(ct, masks, {n: r["components"] for n, r in structure_reports.items()},
                                      result.overlaps)
    report = {
        "input": str(source), "model": package.manifest["name"], "version": package.manifest["version"],
        "weights_sha256": package.manifest["weights"]["sha256"], "device": result.device,
        "ct": {"size_ijk": list(ct.shape_ijk), "spacing_mm": [round(float(s), 4) for s in ct.spacing]},
        "structures": structure_reports,
        "warnings": ct.warnings + plausibility, "outputs": {key: str(path) for key, path in planned.items()},
    }
    if review:
        ranges = {s["name"]: result.review.ranges[s["name"]] for s in chosen}
        report["review"] = {"ranges": ranges, "summary": review_summary(ranges)}

    def write_files(staged: dict[str, Path]) -> None:
        if "segmentation" in staged:
            write_seg_nrrd(labels, chosen, staged["segmentation"])
        if "labels" in staged:
            write_volume(labels, staged["labels"])
        if "rtstruct" in staged:
            from .rtstruct import write_rtstruct  # here: pydicom's import is 0.3 s a NRRD input need not pay

            write_rtstruct(dicom, masks, staged["rtstruct"],
                           series_description=f"LungAutoSeg {package.name}"[:64], generation_algorithm="AUTOMATIC",
                           description="; ".join(report["warnings"]), uid_key=uid_key)
        if "dicom_seg" in staged:
            from .dicom_seg_writer import write_dicom_seg

            write_dicom_seg(dicom, masks, staged["dicom_seg"], algorithm=package.name, uid_key=uid_key)
        if "preview" in staged:
            _write_preview(ct, labels, chosen, staged["preview"])
        if "review" in staged:
            write_volume(result.review.map, staged["review"])
        timings["write"] = round(time.perf_counter() - lap, 3)
        timings["total"] = round(time.perf_counter() - started, 3)
        report["seconds"] = timings
        staged["report"].write_text(json.dumps(report, indent=2) + "\n")

    try:
        _write_outputs(planned, overwrite, output_dir, write_files, name)
    except OSError as error:  # a full disk, a quota, a folder made read-only meanwhile
        raise InputError(f"could not write the outputs ({_os_reason(error)}); nothing was written",
                         output_dir) from error
    progress.stage("done", 1.0, "finished")
    return report


def _os_reason(error: BaseException) -> str:
    """The operating system's words for the first errno in the chain (pydicom re-raises
    write errors without it), else the error's first line."""
    cause = error
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno)
        cause = cause.__cause__ or cause.__context__
    return str(error).splitlines()[0]


NAME_MAX = 255  # bytes in one file name on Linux, macOS and Windows file systems
STAGING_PREFIX = ".lungautoseg-"
ALIVE = ".alive"  # a lock its run holds while it lives: the operating system frees it when the run dies


def _check_names(planned: dict[str, Path], source: Path) -> None:
    """Before the work: every output name (and its staging copy) fits the file system."""
    longest = max(planned.values(), key=lambda p: len(p.name.encode("utf-8")))
    length = len(longest.name.encode("utf-8")) + TEMPORARY_NAME_EXTRA
    if length > NAME_MAX:
        raise InputError(f"the output file {longest.name[:40]}... would need names of {length} bytes while it is "
                         f"written, more than the {NAME_MAX} a file system allows: outputs are named after the input, "
                         "so give the input a shorter name", source)


def _refuse_existing(planned: dict[str, Path], overwrite: bool, output_dir: Path) -> None:
    existing = [p for p in planned.values() if p.exists()]
    if existing and not overwrite:
        raise InputError(f"output exists already: {', '.join(p.name for p in existing)} "
                         "(use --overwrite to replace)", output_dir)


def _write_outputs(planned: dict[str, Path], overwrite: bool, output_dir: Path, write_files,
                   name: str) -> None:
    """``write_files(staged paths)`` writes into a private staging folder; then, holding the
    output folder's lock, the files are renamed into place together. So a failure leaves
    nothing, and two runs into one folder never interleave their files: with --overwrite
    the last run's set wins whole (an earlier run's other outputs of the same input, such as
    its review map, go); without it, outputs that appeared meanwhile are kept. A run killed
    beyond cleaning up (SIGKILL, power) leaves its staging folder: the next run removes it once
    its ``ALIVE`` lock shows that no process holds it."""
    lock = FileLock(output_dir / ".lungautoseg.lock")  # fcntl on POSIX, msvcrt on Windows
    with lock:
        _remove_dead_staging(output_dir)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=output_dir))
        alive = FileLock(staging / ALIVE)
        alive.acquire()
    try:
        staged = {key: staging / path.name for key, path in planned.items()}
        write_files(staged)
        with lock:
            _refuse_existing(planned, overwrite, output_dir)
            if overwrite:  # the earlier run's whole set, also what this run does not write
                for pattern in OUTPUTS.values():
                    (output_dir / pattern.format(name)).unlink(missing_ok=True)
            for key, path in planned.items():
                os.replace(staged[key], path)
    finally:
        alive.release()
        shutil.rmtree(staging, ignore_errors=True)


def _remove_dead_staging(output_dir: Path) -> None:
    """Staging folders whose run is gone (their ``ALIVE`` lock can be taken at once)."""
    for folder in output_dir.glob(f"{STAGING_PREFIX}*"):
        if not folder.is_dir():
            continue
        probe = FileLock(folder / ALIVE, timeout=0)
        try:
            probe.acquire()
        except TimeoutError:  # filelock's Timeout: a live run writes there
            continue
        probe.release()
        shutil.rmtree(folder, ignore_errors=True)


def _keep(labels: Volume, chosen: list[dict]) -> Volume:
    if {s["label"] for s in chosen} >= set(range(1, int(labels.array.max(initial=0)) + 1)):
        return labels  # every value the label map holds is kept
    kept = np.zeros(256, dtype=np.uint8)  # a lookup table: 10x faster than np.isin on a CT grid
    for s in chosen:
        kept[s["label"]] = s["label"]
    return labels.with_array(kept[labels.array])


def _write_preview(ct: Volume, labels: Volume, chosen: list[dict], path: Path) -> None:
    from .overlay import overlay_panel

    colours = [(0, 0, 0)] * (max(s["label"] for s in chosen))
    for s in chosen:
        colours[s["label"] - 1] = tuple(s["colour"])
    picture = overlay_panel(ct, labels, colours)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise InputError("could not write the preview picture", path)
