"""The bundled thoracic package (the default): five organs at risk from a verified two-stage
cascade, each where the clinic drew it, and its RTSTRUCT reads back exactly."""
import json

import numpy as np
import pytest

from conftest import dice, shared_data
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.model_package import CascadePackage, bundled_package, load_package, sha256_of
from LungAutoSegLib.rtstruct import read_roi_masks
from LungAutoSegLib.segment_command import run_segment
from LungAutoSegLib.dicom_scan import scan_dicom

NAMES = ["Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord"]
SNOMED = {"Heart": "80891009", "Esophagus": "32849002", "SpinalCord": "2748008", "Lung_R": "39607008",
          "Lung_L": "39607008"}
CLINIC = {"Lung_R": "Lung-Right", "Lung_L": "Lung-Left", "Heart": "Heart", "Esophagus": "Esophagus",
          "SpinalCord": "Spinal-Cord"}


@pytest.fixture(scope="module")
def package():
    return load_package(None)


def test_the_default_is_the_thoracic_cascade_verified_small_and_described(package):
    assert isinstance(package, CascadePackage) and package.root == bundled_package()
    assert package.name == "thorax-1.0.0" and package.structure_names == NAMES
    assert [s["label"] for s in package.structures] == [1, 2, 3, 4, 5]
    assert {s["name"]: s["snomed"]["type"][1] for s in package.structures} == SNOMED
    lungs, mediastinum = (stage.package for stage in package.stages)
    standalone = load_package(bundled_package().parent / "lungs-2.1.0")
    assert lungs.manifest["weights"]["sha256"] == standalone.manifest["weights"]["sha256"]  # stage 1 is lungs 2.1.0
    assert mediastinum.structure_names == NAMES[2:] and package.stages[1].crop.around == ("Lung_R", "Lung_L")
    assert mediastinum.plan.preprocessing.spacing[0] < lungs.plan.preprocessing.spacing[0]  # the finer stage
    assert sha256_of(mediastinum.weights_path) == mediastinum.manifest["weights"]["sha256"]
    size = sum(p.stat().st_size for p in package.root.rglob("*") if p.is_file())
    assert size <= 30 * 1024 * 1024
    card = (package.root / "MODEL_CARD.md").read_text().lower()
    assert "not clinically validated" in card and "leave-one-patient-out" in card and "rtog 1106" in card
    assert "non-commercial" in card and "cc by-nc 3.0" in card and "marginal loss" in card
    assert "challenge" in card and "failure modes" in card


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    """LUNG1-010 through `segment`, every structure (a training case: a check of the whole path,
    not a score; the scores are the card's leave-one-patient-out table)."""
    root = shared_data("real", "nsclc_radiomics_lung1", "LUNG1-010")
    series = next(s for s in scan_dicom(root).ct_series())
    out = tmp_path_factory.mktemp("lung1-010")
    report = run_segment(series.files[0].parent, out, device="cpu")
    return report, series, scan_dicom(root).rtstructs_for(series)[0].path


def test_every_structure_is_where_the_clinic_drew_it_and_the_report_describes_each(segmented):
    report, series, clinic_rtstruct = segmented
    ct = read_dicom_ct(series.files)
    labels = read_volume(report["outputs"]["labels"]).array
    clinic = read_roi_masks(clinic_rtstruct, ct, list(CLINIC.values()) + ["GTV-1"]).masks
    scored = ~clinic["GTV-1"]
    floor = {"Lung_R": 0.9, "Lung_L": 0.9, "Heart": 0.85, "Esophagus": 0.6, "SpinalCord": 0.75}
    for value, name in enumerate(NAMES, start=1):
        assert dice((labels == value) & scored, clinic[CLINIC[name]] & scored) >= floor[name], name
        entry = report["structures"][name]
        assert entry["volume_ml"] > 0 and entry["components"] >= 1 and len(entry["slices"]) == 2
    assert report["warnings"] == []
    assert set(report["review"]["ranges"]) == set(NAMES)


def test_the_rtstruct_reads_back_as_the_five_labels_exactly(segmented):
    report, series, _ = segmented
    ct = read_dicom_ct(series.files)
    labels = read_volume(report["outputs"]["labels"]).array
    back = read_roi_masks(report["outputs"]["rtstruct"], ct, NAMES).masks
    for value, name in enumerate(NAMES, start=1):
        assert np.array_equal(back[name], labels == value), name


def test_a_narrowed_run_writes_only_what_was_asked(tmp_path):
    from LungAutoSegLib.cli import example_ct

    report = run_segment(example_ct(), tmp_path / "out", device="cpu", structures=["Heart", "SpinalCord"])
    assert list(report["structures"]) == ["Heart", "SpinalCord"]
    labels = read_volume(report["outputs"]["labels"]).array
    assert set(np.unique(labels)) == {0, 3, 5}
    header = json.dumps(report)
    assert "Lung_R" not in header
