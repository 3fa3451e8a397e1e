"""lungautoseg-train export: labels land on the CT in world coordinates, bad cases are skipped."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import thorax_phantom as tp
from conftest import GEOMETRIES, dice, shared_data
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.rtstruct import write_rtstruct
from lungautoseg_train.export import assign_folds, run_export

ALL = list(tp.STRUCTURES)


def export(root, out, rois=ALL, **kwargs):
    return run_export(root, rois, out, progress=False, **kwargs)


def cases_by_name(report):
    return {case["case"]: case for case in report["cases"]}


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_exported_label_equals_ground_truth_in_world_coordinates(tmp_path, write_phantom_case, geometry):
    _, phantom = write_phantom_case(seed=11, geometry=geometry)
    report = export(tmp_path / "dicom", tmp_path / "out", workers=1)
    case = cases_by_name(report)["PHANTOM-011"]
    assert case["status"] == "exported", case["reason"]

    image = read_volume(tmp_path / "out" / case["image"])
    label = read_volume(tmp_path / "out" / case["label"])
    assert image.array.dtype == np.int16 and label.array.dtype == np.uint8
    assert np.array_equal(image.array, phantom.ct.array)
    # truth evaluated afresh at the exported label's own voxel centres (its file's geometry)
    _, truth = tp.evaluate(phantom.anatomy, label.voxel_centres_lps())
    for value, name in enumerate(ALL, start=1):
        assert dice(label.array == value, truth[name]) >= 0.99, name
    right = label.centroid_lps(label.array == 1)
    left = label.centroid_lps(label.array == 2)
    assert right[0] < -40 < 40 < left[0]  # Lung_R on the patient's right: -x in LPS


def test_a_case_without_a_heart_contour_is_exported_with_the_heart_unlabelled(tmp_path, write_phantom_case):
    """A clinic that did not contour the heart did not say "no heart here": the case keeps its
    other structures at their own label values, and says which it has (dataset.csv, report)."""
    _, phantom = write_phantom_case(seed=3, roi_names={"Heart": "PTV_70"})  # no ROI denotes the heart
    write_phantom_case(seed=4)
    report = export(tmp_path / "dicom", tmp_path / "out", workers=1)
    cases = cases_by_name(report)
    partial, whole = cases["PHANTOM-003"], cases["PHANTOM-004"]
    assert partial["status"] == "exported" and partial["missing"] == ["Heart"]
    assert partial["labelled"] == [n for n in ALL if n != "Heart"] and whole["labelled"] == ALL
    assert "not contoured, left unlabelled: Heart" in partial["warnings"]
    assert report["summary"]["partially_labelled"] == 1
    label = read_volume(tmp_path / "out" / partial["label"]).array
    assert not (label == ALL.index("Heart") + 1).any()
    for value, name in enumerate(ALL, start=1):
        if name != "Heart":
            assert dice(label == value, phantom.masks[name]) >= 0.99, name
    rows = {r["case"]: r for r in csv.DictReader(open(tmp_path / "out" / "dataset.csv"))}
    assert rows["PHANTOM-003"]["labelled"].split() == partial["labelled"]
    from lungautoseg_train.data import read_dataset

    records = {r.case: r for r in read_dataset(tmp_path / "out" / "dataset.csv")}
    assert records["PHANTOM-003"].unlabelled(ALL).tolist() == [name == "Heart" for name in ALL]
    assert not records["PHANTOM-004"].unlabelled(ALL).any()


def test_roi_names_are_matched_through_aliases(tmp_path, write_phantom_case):
    write_phantom_case(seed=1, roi_names={"Lung_R": "RT LUNG", "Lung_L": "Lt Lung", "Heart": "HEART"})
    report = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R", "Lung_L", "Heart"], workers=1)
    case = report["cases"][0]
    assert case["status"] == "exported"
    assert case["matched"] == {"Lung_R": "RT LUNG", "Lung_L": "Lt Lung", "Heart": "HEART"}


def test_alias_table_extends_from_a_file(tmp_path, write_phantom_case):
    write_phantom_case(seed=1, roi_names={"Lung_R": "PD clinic 7"})
    assert export(tmp_path / "dicom", tmp_path / "a", rois=["Lung_R"])["cases"][0]["missing"] == ["Lung_R"]
    aliases = tmp_path / "aliases.json"
    aliases.write_text(json.dumps({"Lung_R": ["pd-clinic-7"]}))
    case = export(tmp_path / "dicom", tmp_path / "b", rois=["Lung_R"], aliases_file=aliases)["cases"][0]
    assert case["status"] == "exported" and case["matched"] == {"Lung_R": "PD clinic 7"}


def test_lookalike_names_are_not_lungs(tmp_path, write_phantom_case):
    write_phantom_case(seed=1, roi_names={"Lung_R": "Lung_R-GTV", "Lung_L": "Lungs"})
    case = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R", "Lung_L"])["cases"][0]
    assert case["status"] == "skipped"
    assert case["missing"] == ["Lung_R", "Lung_L"] and "missing ROIs" in case["reason"]


def test_two_rois_for_one_structure_is_ambiguous(tmp_path, write_phantom_case):
    folder, phantom = write_phantom_case(seed=1)
    ct_files = sorted(folder.rglob("CT.*.dcm"))
    from LungAutoSegLib.dicom_io import read_dicom_ct
    ct = read_dicom_ct(ct_files)
    rs = next(folder.rglob("RS.*.dcm"))
    rs.unlink()
    write_rtstruct(ct, {"RT LUNG": phantom.masks["Lung_R"], "Lung Right": phantom.masks["Lung_R"]}, rs)
    case = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R"])["cases"][0]
    assert case["status"] == "skipped" and "ambiguous" in case["reason"]


def test_a_bad_case_is_skipped_and_the_rest_goes_on(tmp_path, write_phantom_case):
    write_phantom_case(seed=1)
    bad, _ = write_phantom_case(seed=2)
    victim = sorted(bad.rglob("CT.*.dcm"))[4]
    victim.write_bytes(victim.read_bytes()[:1500])
    write_phantom_case(seed=3, patient_id="NO-RTSTRUCT")
    next((tmp_path / "dicom" / "NO-RTSTRUCT").rglob("RS.*.dcm")).unlink()
    report = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R"])
    cases = cases_by_name(report)
    assert cases["PHANTOM-001"]["status"] == "exported"
    assert cases["PHANTOM-002"]["status"] == "skipped" and victim.name in cases["PHANTOM-002"]["reason"]
    assert cases["NO-RTSTRUCT"]["reason"] == "no RTSTRUCT references this CT series"
    rows = list(csv.DictReader(open(tmp_path / "out" / "dataset.csv")))
    assert [r["case"] for r in rows] == ["PHANTOM-001"]
    assert not (tmp_path / "out" / "images" / "PHANTOM-002.nii.gz").exists()


def test_folds_are_patient_level_and_seeded(tmp_path, write_phantom_case):
    write_phantom_case(seed=1, patient_id="TWICE")
    write_phantom_case(seed=2, patient_id="TWICE")
    for seed in (3, 4, 5):
        write_phantom_case(seed=seed)
    report = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R"], folds=3, seed=7)
    assert report["summary"]["exported"] == 5
    rows = list(csv.DictReader(open(tmp_path / "out" / "dataset.csv")))
    folds = {r["case"]: r["fold"] for r in rows}
    assert folds["TWICE_1"] == folds["TWICE_2"]
    assert {r["patient"] for r in rows} == {"TWICE", "PHANTOM-003", "PHANTOM-004", "PHANTOM-005"}
    assert set(folds.values()) == {"0", "1", "2"}  # 4 patients over 3 folds
    patients = [f"P{n}" for n in range(20)]
    assert assign_folds(patients, 5, 1) == assign_folds(patients[::-1], 5, 1)
    assert assign_folds(patients, 5, 1) != assign_folds(patients, 5, 2)
    assert sorted(np.bincount(list(assign_folds(patients, 5, 1).values()))) == [4] * 5


def test_forty_cases_use_every_core_and_a_rerun_skips_them_all(tmp_path):
    for seed in range(40):
        phantom = tp.render(tp.make_anatomy(seed), tp.make_grid((32, 32, 8), (11, 11, 30)))
        tp.write_case(tmp_path / "dicom", f"P{seed:03d}", phantom)
    first = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R", "Lung_L"])
    assert first["summary"]["exported"] == 40
    assert len({case["worker_pid"] for case in first["cases"]}) == min(2, os.cpu_count())
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nii.gz")}

    again = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R", "Lung_L"])
    assert again["summary"]["reused"] == 40 and again["summary"]["exported"] == 40
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*.nii.gz")} == stamps

    touched = next((tmp_path / "dicom" / "P007").rglob("RS.*.dcm"))
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R", "Lung_L"])
    assert [c["case"] for c in third["cases"] if not c["reused"]] == ["P007"]
    fourth = export(tmp_path / "dicom", tmp_path / "out", rois=["Lung_R"])  # other settings: redo
    assert fourth["summary"]["reused"] == 0


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lungautoseg_train.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_cli_on_real_lidc_slabs_reports_no_rtstruct(tmp_path):
    root = shared_data("real", "lidc_idri_slabs", "small")
    done = run_cli("export", "--dicom-root", root, "--roi", "Lung_R", "--out", tmp_path, "--quiet")
    assert done.returncode == 1, done.stderr  # cases were left out
    for patient in ("LIDC-IDRI-0001", "LIDC-IDRI-0002", "LIDC-IDRI-0003"):
        assert f"{patient}: skipped: no RTSTRUCT references this CT series" in done.stdout
    assert "0 of 3 cases exported" in done.stdout
    assert "Traceback" not in done.stderr


def test_cli_on_real_incomplete_series_reports_missing_slices_and_alias(tmp_path):
    root = shared_data("real", "dicompyler_core_breast_example")
    done = run_cli("export", "--dicom-root", root, "--roi", "Lung_R,Lung_L", "--out", tmp_path, "--quiet")
    assert done.returncode == 1, done.stderr
    assert "RTSTRUCT references 97 slices that are missing from the CT series" in done.stdout
    assert "'Lt Lung' -> Lung_L" in done.stdout
    case = json.loads((tmp_path / "export_report.json").read_text())["cases"][0]
    assert case["matched"] == {"Lung_L": "Lt Lung"} and case["status"] == "skipped"


def test_cli_errors_are_one_clear_line(tmp_path):
    done = run_cli("export", "--dicom-root", tmp_path / "absent", "--roi", "Lung_R", "--out", tmp_path / "o")
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "empty").mkdir()
    done = run_cli("export", "--dicom-root", tmp_path / "empty", "--roi", "Lung_R", "--out", tmp_path / "o")
    assert done.returncode == 2 and "no DICOM CT series found" in done.stderr
