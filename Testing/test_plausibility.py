"""Never silently wrong: every segmentation is checked, and CTs that are not chests get warnings."""
import json

import numpy as np
import pytest

import non_chest_phantoms as ncp
from conftest import shared_data
from LungAutoSegLib import cli, plausibility
from LungAutoSegLib.image_io import write_volume
from LungAutoSegLib.segment_command import run_segment
from LungAutoSegLib.volume import Volume

LUNGS = [{"name": "Lung_R", "label": 1}, {"name": "Lung_L", "label": 2}]


def _segment(volume: Volume, tmp_path) -> dict:
    source = tmp_path / "ct.nii.gz"
    write_volume(volume, source)
    return run_segment(source, tmp_path / "out", device="cpu")


@pytest.mark.parametrize("make, words", [
    (ncp.head_ct, "not a chest CT"),
    (ncp.abdomen_ct, "not a chest CT"),
    (ncp.water_phantom, "almost no bone"),
])
def test_a_ct_that_is_not_a_chest_gets_a_warning_that_names_the_problem(make, words, tmp_path, capsys):
    source = tmp_path / "ct.nii.gz"
    write_volume(make(), source)
    code = cli.main(["segment", str(source), "-o", str(tmp_path / "out"), "--device", "cpu", "--progress", "none"])
    report = json.loads(next((tmp_path / "out").glob("*_report.json")).read_text())
    assert code == 0 and report["warnings"], report["structures"]
    assert any(words in w or "not found" in w for w in report["warnings"]), report["warnings"]
    assert f"warning: {report['warnings'][0]}" in capsys.readouterr().err


CHESTS = [("reference", "pyrad_lung2")] + [("nsclc", n) for n in ("LUNG1-005", "LUNG1-006", "LUNG1-008", "LUNG1-010")]


def _chest_source(kind: str, name: str):
    if kind == "reference":
        folder = shared_data("reference", name)
        return shared_data(json.loads((folder / "case.json").read_text())["ct"])
    return next(shared_data("real", "nsclc_radiomics_lung1", name).glob("*StudyID*/*"))


@pytest.mark.parametrize("kind, name", CHESTS)
def test_every_full_chest_ct_of_the_shared_data_gets_no_warning(kind, name, tmp_path):
    report = run_segment(_chest_source(kind, name), tmp_path / "out", device="cpu")
    assert report["warnings"] == []
    assert all(1000 < s["volume_ml"] < 4500 for s in report["structures"].values())


def test_the_embedded_example_gets_no_warning(tmp_path):
    report = run_segment(cli.example_ct(), tmp_path / "out", device="cpu")
    assert report["warnings"] == []


def _chest(shape=(40, 60, 80)) -> tuple[Volume, np.ndarray]:
    """A box of soft tissue with ribs of bone and two aerated 'lungs' (labels 1, 2) inside."""
    hu = np.full(shape, 40, np.int16)
    hu[:, :, :3] = 700
    labels = np.zeros(shape, np.uint8)
    labels[8:32, 10:50, 10:38], labels[8:32, 10:50, 42:70] = 1, 2
    hu[labels > 0] = -850
    return Volume.from_spacing(hu, (3.0, 3.0, 5.0), (0, 0, 0)), labels


def _check(ct: Volume, labels: np.ndarray, components: dict) -> list[str]:
    return plausibility.check(ct, {s["name"]: labels == s["label"] for s in LUNGS}, components)


def test_a_lung_cut_by_the_scan_end_is_incomplete_coverage():
    ct, labels = _chest()
    assert _check(ct, labels, {"Lung_R": 1, "Lung_L": 1}) == []
    labels[:8][labels[8:16] > 0] = labels[8:16][labels[8:16] > 0]  # Lung_R/L now reach slice 0
    warnings = _check(ct, labels, {"Lung_R": 1, "Lung_L": 1})
    assert sum("incomplete coverage: the scan's first slice cuts" in w for w in warnings) == 2


def test_missing_dense_asymmetric_and_broken_lungs_are_named():
    ct, labels = _chest()
    labels[labels == 2] = 0
    labels[8:32, 10:20, 42:50] = 2  # a small left lung
    warnings = _check(ct, labels, {"Lung_R": 1, "Lung_L": 4})
    assert any("strongly asymmetric" in w for w in warnings)
    assert any("Lung_L is in 4 pieces" in w for w in warnings)
    labels[labels == 2] = 0
    assert any("Lung_L not found" in w for w in _check(ct, labels, {}))
    dense = ct.with_array(np.where(labels == 1, 20, ct.array).astype(np.int16))
    assert any("Lung_R is not aerated" in w for w in _check(dense, labels, {}))


def test_a_chest_ct_whose_scan_ends_inside_a_lung_is_told_incomplete_coverage(tmp_path):
    """pyradiomics' lung1 ends inside the right lung base: its reference mask holds 61% of the
    lung's largest cross-section on the first slice. That, and nothing else, is said."""
    report = run_segment(_chest_source("reference", "pyrad_lung1"), tmp_path / "out", device="cpu")
    assert report["warnings"] and all(w.startswith("incomplete coverage") for w in report["warnings"])
    assert any("cuts Lung_R" in w for w in report["warnings"])
