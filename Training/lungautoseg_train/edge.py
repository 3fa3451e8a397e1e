"""``lungautoseg-train tune-edge``: choose a package's ``edge_hu`` on contoured cases.

The edge (``LungAutoSegLib.to_ct_grid``) redraws the model's boundary where the CT turns from
lung to tissue. Where exactly in that turn an expert puts the line is a contouring convention,
so the value is measured on cases contoured to the convention the model is to follow, and
never on a case it is then scored on. The model runs once per case through the two halves of
the engine's ``predict`` (``on_model_grid``, then ``labels_on_ct`` per value): what is measured
is what users get.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from LungAutoSegLib.atomic import atomic_path
from LungAutoSegLib.inference import labels_on_ct, on_model_grid, resolve_device
from LungAutoSegLib.model_package import ModelPackage, load_package

from .data import CaseRecord, label_values, read_dataset
from .evaluate import read_case, select
from .metrics import dice

CANDIDATES = (-400.0, -350.0, -300.0, -250.0, -200.0, -150.0, -100.0)


def with_edge(package: ModelPackage, edge_hu: float | None) -> ModelPackage:
    """The package with its plan's ``edge_hu`` changed (the weights and manifest are shared)."""
    inference = package.plan.inference
    postprocessing = dataclasses.replace(inference.postprocessing, edge_hu=edge_hu)
    plan = dataclasses.replace(package.plan, inference=dataclasses.replace(inference, postprocessing=postprocessing))
    return dataclasses.replace(package, plan=plan)


def edge_dice(package: ModelPackage, records: list[CaseRecord], csv_path, candidates=CANDIDATES, *,
              device: str = "cpu", progress: bool = False) -> list[dict]:
    """Dice per case, structure and ``edge_hu`` (None: the edge off), outside each ignore mask."""
    device = resolve_device(device)
    network = package.load_network(device)
    values = label_values(csv_path, package.structure_names)
    rows = []
    for record in tqdm(records, desc="tune-edge", unit="case", disable=not progress):
        ct, reference, ignore = read_case(record)
        keep = ~ignore if ignore is not None else np.ones(ct.array.shape, bool)
        expected = [(reference.array == value) & keep for value in values]  # the same for every value
        _, masks, grid = on_model_grid(ct, package, network, device)
        for edge_hu in (None, *candidates):
            steps = dataclasses.replace(package.plan.inference.postprocessing, edge_hu=edge_hu)
            labels = labels_on_ct(masks, grid, ct, steps, package.structure_names)
            for label, (name, truth) in enumerate(zip(package.structure_names, expected), start=1):
                score = dice((labels == label) & keep, truth)
                rows.append({"case": record.case, "structure": name, "edge_hu": edge_hu, "dice": round(score, 4)})
    return rows


def mean_dice_by_edge(rows: list[dict], cases=None) -> dict:
    """{edge_hu: mean Dice over the structures of ``cases`` (default: all)}."""
    chosen = [r for r in rows if cases is None or r["case"] in cases]
    return {edge: float(np.mean([r["dice"] for r in chosen if r["edge_hu"] == edge]))
            for edge in dict.fromkeys(r["edge_hu"] for r in chosen)}


def best_edge(rows: list[dict], cases=None) -> float | None:
    """The ``edge_hu`` with the highest mean Dice on ``cases`` (None if the edge off is best)."""
    means = mean_dice_by_edge(rows, cases)
    return max(means, key=means.get)


def run_tune_edge(model, data, *, split: str = "all", candidates=None, device: str = "auto",
                  out: Path | None = None, progress: bool = True) -> dict:
    package = load_package(model)
    rows = edge_dice(package, select(read_dataset(data), split), data, candidates or CANDIDATES, device=device,
                     progress=progress)
    result = {"model": package.name, "cases": sorted({r["case"] for r in rows}), "rows": rows,
              "mean_dice": {str(k): v for k, v in mean_dice_by_edge(rows).items()}, "best_edge_hu": best_edge(rows)}
    if out is not None:
        with atomic_path(Path(out), suffix=".json") as temporary:
            temporary.write_text(json.dumps(result, indent=2))
    return result
