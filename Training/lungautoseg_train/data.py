"""Training data: the dataset CSV, a checked cache of preprocessed cases, patch sampling.

Every case is preprocessed once with the engine's own ``image_to_model`` (the definition
stored in the model package) and cached with a checksum: a corrupt or stale cache entry
is rebuilt, never trusted. Random patches are drawn with a random state derived from
(seed, epoch, case), so a resumed run, any number of workers and any DDP rank see the
same patches as an uninterrupted run.
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from LungAutoSegLib.atomic import atomic_path
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.preprocess import REVISION as PREPROCESSING_REVISION
from LungAutoSegLib.plan import Preprocessing
from LungAutoSegLib.preprocess import image_to_model, labels_to_model

from .dataset_files import LABELLED_SEPARATOR, REPORT_NAME

IGNORE = 255  # label of voxels that training leaves out of the loss (the dataset's ignore mask)


@dataclass
class CaseRecord:
    case: str
    image: Path
    label: Path
    fold: int
    ignore: Path | None = None  # optional "ignore" column: voxels the reference does not score
    split: str = ""             # optional "split" column, e.g. train / test
    labelled: tuple[str, ...] | None = None  # optional "labelled" column; None: every structure is

    def unlabelled(self, structures: list[str]) -> np.ndarray:
        """Per structure, True where this case's reference does not contour it (partial labels)."""
        return np.array([self.labelled is not None and s not in self.labelled for s in structures], bool)


@dataclass
class PreparedCase:
    case: str
    image: np.ndarray   # float32 (k, j, i) on the model grid
    label: np.ndarray   # uint8 (k, j, i): 0 background, n = n-th configured structure, IGNORE not scored
    # per structure: not contoured in this case, so its voxels may hide in "background"
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


def read_dataset(csv_path: str | Path) -> list[CaseRecord]:
    csv_path = Path(csv_path)
    try:
        rows = list(csv.DictReader(csv_path.read_text().splitlines()))
    except FileNotFoundError:
        raise InputError("dataset CSV not found", csv_path) from None
    missing = {"case", "image", "label", "fold"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise InputError(f"dataset CSV needs columns case, image, label, fold "
                         f"({'no rows' if not rows else 'missing ' + ', '.join(sorted(missing))})", csv_path)
    records = []
    for row in rows:
        try:
            fold = int(row["fold"])
        except ValueError:
            raise InputError(f"case {row['case']}: fold {row['fold']!r} is not an integer", csv_path) from None
        ignore = csv_path.parent / row["ignore"] if row.get("ignore") else None
        labelled = tuple(row["labelled"].split(LABELLED_SEPARATOR)) if row.get("labelled") else None
        records.append(CaseRecord(row["case"], csv_path.parent / row["image"], csv_path.parent / row["label"],
                                  fold, ignore, row.get("split") or "", labelled))
    return records


def split(records: list[CaseRecord], validation_fold: int | None) -> tuple[list[CaseRecord], list[CaseRecord]]:
    if validation_fold is None:
        return records, []
    train = [r for r in records if r.fold != validation_fold]
    validation = [r for r in records if r.fold == validation_fold]
    if not train or not validation:
        raise InputError(f"fold {validation_fold} leaves {len(train)} training and {len(validation)} "
                         f"validation cases; folds present: {sorted({r.fold for r in records})}")
    return train, validation


def label_values(csv_path: str | Path, structures: list[str]) -> list[int]:
    """The dataset's label value of each structure: the export report's ROI order, else 1..n."""
    report = Path(csv_path).parent / REPORT_NAME
    if not report.is_file():
        return list(range(1, len(structures) + 1))
    rois = json.loads(report.read_text())["rois"]
    absent = [s for s in structures if s not in rois]
    if absent:
        raise InputError(f"structures {', '.join(absent)} were not exported (export ROIs: {', '.join(rois)})", report)
    return [rois.index(s) + 1 for s in structures]


def _file_key(path: Path) -> list:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def prepare_case(record: CaseRecord, settings: Preprocessing, values: list[int], cache_dir: Path,
                 structures: list[str] = ()) -> PreparedCase:
    """The case on the model grid, from the cache when a valid entry exists; ``structures``
    (the configured ones, in label order) say which of them the case leaves unlabelled."""
    unlabelled = record.unlabelled(list(structures))
    files = [record.image, record.label] + ([record.ignore] if record.ignore else [])
    for path in files:
        if not path.is_file():
            raise InputError(f"case {record.case}: file listed in the dataset CSV is missing", path)
    key = hashlib.sha256(json.dumps([[_file_key(path) for path in files],
                                     settings.to_dict(), values, PREPROCESSING_REVISION]).encode()).hexdigest()[:16]
    entry = cache_dir / f"{record.case}-{key}.npz"
    try:
        with np.load(entry) as stored:
            image, label = stored["image"], stored["label"]
            if str(stored["digest"]) == _digest(image, label):
                return PreparedCase(record.case, image, label, unlabelled)
    except (OSError, ValueError, KeyError, EOFError):
        pass  # absent, truncated or corrupt: rebuild below
    image, grid = image_to_model(read_volume(record.image), settings)
    raw = labels_to_model(read_volume(record.label), grid)
    label = np.zeros_like(raw)
    for structure_index, value in enumerate(values, start=1):
        label[raw == value] = structure_index
    if record.ignore:
        label[labels_to_model(read_volume(record.ignore), grid) > 0] = IGNORE
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(entry, suffix=".npz") as temporary:
        np.savez(temporary, image=image, label=label, digest=_digest(image, label))
    return PreparedCase(record.case, image, label, unlabelled)


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from (seed, epoch, index...) that is well mixed and reproducible."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:4], "little")


class PatchDataset(torch.utils.data.Dataset):
    """Item n of epoch e = ``samples_per_case`` augmented patches of case n, seeded by (seed, e, n)."""

    def __init__(self, cases: list[PreparedCase], transform, seed: int):
        self.cases, self.transform, self.seed, self.epoch = cases, transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int):
        case = self.cases[index]
        self.transform.set_random_state(seed=derived_seed(self.seed, self.epoch, index))
        return self.transform({"image": case.image[None], "label": case.label[None], "unlabelled": case.unlabelled})
