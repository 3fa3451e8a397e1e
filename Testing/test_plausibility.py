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


CHESTS = [("reference", "pyrad_lung2")] + [("nsclc", f"LUNG1-{n:03d}") for n in (4, 5, 6, 8, 9, 10)]


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


def _thorax(direction=np.eye(3)) -> tuple[Volume, dict[str, np.ndarray]]:
    """A 3 mm chest with the five structures where anatomy puts them (LPS: right lung at -x,
    cord behind the esophagus and the heart); ``direction`` flips or turns the grid's axes."""
    shape = (50, 80, 100)  # k, j, i
    hu = np.full(shape, 40, np.int16)
    hu[:, 60:66, 45:55] = 700  # vertebra
    masks = {name: np.zeros(shape, bool) for name in ("Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord")}
    masks["Lung_R"][5:45, 15:60, 8:40] = True
    masks["Lung_L"][5:45, 15:60, 60:92] = True
    masks["Heart"][10:25, 12:35, 42:62] = True    # 15 x 23 x 20 voxels of 27 ml: 186 ml
    masks["Esophagus"][5:48, 50:54, 48:52] = True
    masks["SpinalCord"][0:50, 61:64, 49:51] = True
    for name in ("Lung_R", "Lung_L"):
        hu[masks[name]] = -850
    centre = np.array([50, 40, 25]) * 3.0
    affine_origin = -np.asarray(direction) @ centre
    return Volume.from_spacing(hu, (3.0, 3.0, 3.0), affine_origin, np.asarray(direction, float)), masks


def _organ_check(ct, masks, components=None, overlaps=None):
    return plausibility.check(ct, masks, components or {n: 1 for n in masks}, overlaps)


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, 1.0]), np.diag([-1.0, -1.0, 1.0])])
def test_a_plausible_thorax_is_silent_on_any_grid(direction):
    ct, masks = _thorax(direction)
    if direction[0, 0] < 0:  # the grid runs from the patient's left: the arrays hold the anatomy mirrored
        masks = {n: m[:, :, ::-1] for n, m in masks.items()}
        ct = ct.with_array(ct.array[:, :, ::-1].copy())
    if direction[1, 1] < 0:
        masks = {n: m[:, ::-1, :] for n, m in masks.items()}
        ct = ct.with_array(ct.array[:, ::-1, :].copy())
    assert _organ_check(ct, masks) == []


def test_swapped_lungs_are_told_from_patient_coordinates_not_array_order():
    ct, masks = _thorax()
    masks["Lung_R"], masks["Lung_L"] = masks["Lung_L"], masks["Lung_R"]
    warnings = _organ_check(ct, masks)
    assert any(w.startswith("Lung_R lies on the patient's left") for w in warnings), warnings
    assert any(w.startswith("Lung_L lies on the patient's right") for w in warnings), warnings
    flipped, _ = _thorax(np.diag([-1.0, 1.0, 1.0]))  # the same arrays on a grid from the patient's left: right
    assert _organ_check(flipped.with_array(ct.array), masks) == []


def test_each_implausible_organ_gets_its_own_line():
    ct, masks = _thorax()
    masks["Heart"][:] = False
    masks["Heart"][20:22, 20:24, 50:54] = True  # 0.9 ml
    assert [w for w in _organ_check(ct, masks) if w.startswith("Heart volume 1 ml is implausible")]
    ct, masks = _thorax()
    assert "SpinalCord is in 3 pieces" in _organ_check(ct, masks, {"SpinalCord": 3})
    masks["SpinalCord"][30:] = False  # ends at 90 mm of the lungs' 135 mm extent
    assert any(w.startswith("SpinalCord ends") and "short of the lungs' apex" in w for w in _organ_check(ct, masks))
    ct, masks = _thorax()
    masks["SpinalCord"] = np.roll(masks["SpinalCord"], -50, axis=1)  # moved 150 mm forward
    warnings = _organ_check(ct, masks)
    assert any(w.startswith("SpinalCord lies in front of the Esophagus") for w in warnings), warnings
    assert any(w.startswith("SpinalCord lies in front of the Heart") for w in warnings), warnings
    ct, masks = _thorax()
    masks["Esophagus"] = np.roll(masks["Esophagus"], -30, axis=2)  # 90 mm to the patient's right, in the lung
    assert [w for w in _organ_check(ct, masks) if w.startswith("Esophagus lies outside the mediastinum") and
            "to the patient's right" in w]
    ct, masks = _thorax()
    warnings = _organ_check(ct, masks, overlaps={("Heart", "Lung_L"): 800, ("Esophagus", "Heart"): 10})
    assert warnings == ["Heart and Lung_L overlap: both were found in 21.6 ml (given to Heart): check their border"]
