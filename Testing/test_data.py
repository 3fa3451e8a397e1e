"""Training data: the checked cache, label values from the export report."""
import json

import numpy as np
import pytest

import thorax_phantom as tp
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.plan import Preprocessing
from lungautoseg_train.data import label_values, prepare_case, read_dataset


GRID = dict(shape_ijk=(64, 64, 24), spacing=(5.5, 5.5, 10.0))


def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(tmp_path):
    csv = tp.write_nifti_dataset(tmp_path, [2], folds=1, **GRID)
    record, settings = read_dataset(csv)[0], Preprocessing((6.0, 6.0, 6.0))
    first = prepare_case(record, settings, [1, 2], tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    data = dict(np.load(entry))
    data["label"] = np.zeros_like(data["label"])  # damaged content, stale digest
    np.savez(entry, **data)
    again = prepare_case(record, settings, [1, 2], tmp_path / "cache")
    assert np.array_equal(again.label, first.label) and again.label.max() == 2
    entry.write_bytes(b"truncated")
    assert np.array_equal(prepare_case(record, settings, [1, 2], tmp_path / "cache").label, first.label)


def test_label_values_follow_the_export_report(tmp_path):
    assert label_values(tmp_path / "dataset.csv", ["Lung_R", "Lung_L"]) == [1, 2]
    (tmp_path / "export_report.json").write_text(json.dumps({"rois": ["Heart", "Lung_L", "Lung_R"]}))
    assert label_values(tmp_path / "dataset.csv", ["Lung_R", "Lung_L"]) == [3, 2]
    with pytest.raises(InputError, match="SpinalCord were not exported"):
        label_values(tmp_path / "dataset.csv", ["SpinalCord"])
