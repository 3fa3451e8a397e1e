"""``lungautoseg-train evaluate``: a model package scored on dataset cases, on each CT's own grid.

The model runs through the engine's ``inference.predict`` (what users get), and the metrics compare
its label map with the reference label on the original CT grid, never on the model grid.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
from tqdm import tqdm

from LungAutoSegLib.atomic import atomic_path
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.ct_reader import read_ct
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.inference import predict, resolve_device
from LungAutoSegLib.model_package import ModelPackage, load_package

from .data import CaseRecord, label_values, read_dataset
from .metrics import IMPLEMENTATION, structure_metrics

METRICS = ("dice", "hd95_mm", "msd_mm", "surface_dice_2mm", "volume_error_pct", "volume_ml", "reference_volume_ml")


def select(records: list[CaseRecord], split: str = "all") -> list[CaseRecord]:
    """``all``, a fold number, or a value of the CSV's optional ``split`` column (e.g. ``test``)."""
    if split == "all":
        return records
    chosen = [r for r in records if (split.lstrip("-").isdigit() and r.fold == int(split)) or r.split == split]
    if not chosen:
        raise InputError(f"no cases in split {split!r}; folds present: {sorted({r.fold for r in records})}, "
                         f"split values: {sorted({r.split for r in records if r.split}) or 'none'}")
    return chosen


def _on_same_grid(ct, other, path: Path) -> None:
    if other.array.shape != ct.array.shape or not np.allclose(other.ijk_to_lps, ct.ijk_to_lps, atol=1e-3):
        raise InputError("reference is not on the CT's grid (export writes both on the same grid)", path)


def read_case(record: CaseRecord):
    """A dataset case as (CT volume, reference label volume, ignore mask or None), one grid."""
    ct = read_ct(record.image).volume
    reference = read_volume(record.label)
    _on_same_grid(ct, reference, record.label)
    ignore = None
    if record.ignore is not None:
        ignore_volume = read_volume(record.ignore)
        _on_same_grid(ct, ignore_volume, record.ignore)
        ignore = ignore_volume.array > 0
    return ct, reference, ignore


def evaluate_records(package: str | Path | ModelPackage, records: list[CaseRecord], csv_path, *,
                     device: str = "auto", with_overlays: bool = False, progress: bool = False) -> dict:
    """``package``: a folder or zip, or a loaded package (e.g. with a changed plan)."""
    package = package if isinstance(package, ModelPackage) else load_package(package)
    device = resolve_device(device)
    network = package.load_network(device)
    names = package.structure_names
    values = label_values(csv_path, names)
    rows, overlays = [], {}
    for record in tqdm(records, desc="evaluate", unit="case", disable=not progress):
        ct, reference, ignore = read_case(record)
        result = predict(ct, package, device=device, network=network)
        spacing_kji = ct.spacing[::-1]
        for label, (name, value) in enumerate(zip(names, values), start=1):
            if record.labelled is not None and name not in record.labelled:
                continue  # not contoured in this case: nothing to score it against
            metrics = structure_metrics(result.labels.array == label, reference.array == value, spacing_kji, ignore)
            rows.append({"case": record.case, "structure": name, **metrics})
        if with_overlays:
            from LungAutoSegLib.overlay import overlay_panel

            truth = np.zeros(reference.array.shape, np.uint8)
            for label, value in enumerate(values, start=1):
                truth[reference.array == value] = label
            overlays[record.case] = overlay_panel(ct, result.labels, [s["colour"] for s in package.structures],
                                                  reference.with_array(truth))
    mean = {name: {metric: _nanmean([r[metric] for r in rows if r["structure"] == name]) for metric in METRICS}
            for name in names}
    return {"model": package.name, "weights_sha256": package.manifest["weights"]["sha256"],
            "device": device, "implementation": IMPLEMENTATION, "cases": rows, "mean": mean, "overlays": overlays}


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return round(float(np.mean(finite)), 4) if finite else math.nan


def write_evaluation(evaluation: dict, out: Path, *, overwrite: bool = False) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=["case", "structure", *METRICS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(evaluation["cases"])
    paths = out / "evaluation.csv", out / "evaluation.json"
    summary = {k: v for k, v in evaluation.items() if k != "overlays"}
    for path, text in zip(paths, (table.getvalue(), json.dumps(summary, indent=2))):
        with atomic_path(path, overwrite=overwrite) as temporary:
            temporary.write_text(text)
    return paths


def log_evaluation(run, evaluation: dict) -> None:
    """One W&B table row per case and structure, with the case's overlay picture."""
    import wandb

    columns = ["case", "structure", "dice", "hd95_mm", "msd_mm", "surface_dice_2mm", "volume_error_pct", "overlay"]
    table = wandb.Table(columns=columns)
    for row in evaluation["cases"]:
        picture = evaluation["overlays"].get(row["case"])
        table.add_data(*[row[c] for c in columns[:-1]], wandb.Image(picture) if picture is not None else None)
    run.log({"evaluation/cases": table})
    run.summary.update({f"evaluation/{name}/{metric}": value for name, metrics in evaluation["mean"].items()
                        for metric, value in metrics.items()})
    run.summary["evaluation/implementation"] = evaluation["implementation"]


def run_evaluate(model, data, out, *, split: str = "all", device: str = "auto", wandb_mode: str | None = None,
                 overwrite: bool = False, progress: bool = True) -> dict:
    from . import tracking

    records = select(read_dataset(data), split)
    mode = tracking.resolve_mode(wandb_mode)
    evaluation = evaluate_records(model, records, data, device=device, with_overlays=mode != "disabled",
                                  progress=progress)
    write_evaluation(evaluation, Path(out), overwrite=overwrite)
    if mode != "disabled":
        config = {"name": f"evaluate-{evaluation['model']}", "wandb": {"project": "lungautoseg", "entity": None,
                                                                      "tags": ["evaluate"]},
                  "model": evaluation["model"], "data": str(data), "split": split}
        run = tracking.start_run(config, mode, None, Path(out), job_type="evaluate")
        log_evaluation(run, evaluation)
        run.finish()
    return evaluation
