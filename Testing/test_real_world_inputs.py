"""Real-world DICOM through segment (real_world_inputs.py): a correct contour, or one clear line."""
import json
import subprocess
import sys

import numpy as np
import pydicom
import pytest

from bad_inputs import ct_slices, patient
from real_world_inputs import CORPUS, RealInput, enhanced_ct
from LungAutoSegLib.cli import main as engine
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.rtstruct import read_roi_masks, write_rtstruct
from test_bad_inputs import error_lines, fingerprint


def _volumes(output) -> dict[str, float]:
    report = json.loads(next(output.glob("*_report.json")).read_text())
    return {name: facts["volume_ml"] for name, facts in report["structures"].items()}


@pytest.fixture(scope="module")
def clean_volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    _, ct = patient(root)
    assert engine(["segment", str(ct), "-o", str(root / "out"), "--progress", "none", "--device", "cpu"]) == 0
    volumes = _volumes(root / "out")
    assert all(v > 50 for v in volumes.values())
    return volumes


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_each_real_world_input_contours_like_the_clean_ct_or_gets_one_clear_line(case: RealInput, tmp_path, capsys,
                                                                                  clean_volumes):
    source = case.write(tmp_path / "input")
    before = fingerprint(tmp_path / "input")
    output = tmp_path / "out"
    code = engine(["segment", str(source), "-o", str(output), "--progress", "none", "--device", "cpu"])
    captured = capsys.readouterr()
    assert fingerprint(tmp_path / "input") == before and "Traceback" not in captured.err
    if case.segment is not None:
        lines = error_lines(captured.err)
        assert code == 2 and len(lines) == 1, captured.err
        assert all(word in lines[0] for word in case.segment), lines[0]
        assert not output.exists()  # no output, not even an empty folder
        return
    assert code == 0, captured.err
    for name, volume in _volumes(output).items():
        assert abs(volume - clean_volumes[name]) <= case.tolerance * clean_volumes[name] + 0.05, (name, volume)
    rtstruct_path = next(output.glob("*_rtstruct.dcm"))
    ct = read_dicom_ct(source)
    rtstruct = pydicom.dcmread(rtstruct_path)
    assert rtstruct.SpecificCharacterSet == ct.datasets[0].get("SpecificCharacterSet", "ISO_IR 100")
    assert rtstruct.PatientName == ct.datasets[0].PatientName  # decoded text equal, in any character set
    label_map = read_volume(next(output.glob("*_labels.nii.gz"))).array
    masks = read_roi_masks(rtstruct_path, ct, ["Lung_R", "Lung_L"]).masks
    assert np.array_equal(masks["Lung_R"], label_map == 1) and np.array_equal(masks["Lung_L"], label_map == 2)


def test_an_enhanced_ct_reads_as_the_classic_series_and_its_rtstruct_cites_frames(tmp_path):
    _, ct_folder = patient(tmp_path)
    classic = read_dicom_ct(ct_folder)
    enhanced_ct(ct_slices(ct_folder), tmp_path / "enhanced.dcm")
    multi = read_dicom_ct([tmp_path / "enhanced.dcm"])
    assert np.array_equal(multi.volume.array, classic.volume.array)
    assert np.allclose(multi.volume.ijk_to_lps, classic.volume.ijk_to_lps)
    mask = classic.volume.array < -500
    write_rtstruct(multi, {"Air": mask}, tmp_path / "rs.dcm")
    rs = pydicom.dcmread(tmp_path / "rs.dcm")
    images = rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0] \
        .RTReferencedSeriesSequence[0].ContourImageSequence
    assert sorted(int(i.ReferencedFrameNumber) for i in images) == list(range(1, len(multi.datasets) + 1))
    assert {i.ReferencedSOPInstanceUID for i in images} == {multi.datasets[0].SOPInstanceUID}
    for contour in rs.ROIContourSequence[0].ContourSequence:
        assert contour.ContourImageSequence[0].ReferencedFrameNumber >= 1
    assert np.array_equal(read_roi_masks(tmp_path / "rs.dcm", multi, ["Air"]).masks["Air"], mask)


def test_inspect_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    _, ct = patient(tmp_path)
    command = f'"{sys.executable}" -m LungAutoSegLib.cli inspect "{ct}" | head -c 1'
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    assert done.stdout == "{" and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_segment_runs_where_fcntl_does_not_exist(tmp_path):
    """Windows has no fcntl: the segment path must not need it."""
    _, ct = patient(tmp_path)
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "from LungAutoSegLib.cli import main\n"
            f"sys.exit(main(['segment', r'{ct}', '-o', r'{tmp_path / 'out'}', '--progress', 'none']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "out").glob("*_rtstruct.dcm"))) == 1


@pytest.mark.parametrize("ids", [("LUNG 01", "LUNG/01"), ("山田", "田中")])
def test_export_keeps_patients_whose_ids_clean_up_to_the_same_name(ids, tmp_path, write_phantom_case):
    from lungautoseg_train.export import run_export

    for seed, patient_id in enumerate(ids):
        folder, _ = write_phantom_case(seed=seed, patient_id=f"P{seed}")
        for path in folder.rglob("*.dcm"):  # the IDs in UTF-8, as a Japanese PACS sends them
            ds = pydicom.dcmread(path)
            ds.SpecificCharacterSet, ds.PatientID = "ISO_IR 192", patient_id
            ds.save_as(path)
    report = run_export(tmp_path / "dicom", ["Lung_R", "Lung_L"], tmp_path / "out", progress=False, workers=1)
    assert report["summary"]["exported"] == 2
    assert len({c["case"] for c in report["cases"]}) == 2 and {c["patient"] for c in report["cases"]} == set(ids)
    assert len(list((tmp_path / "out" / "labels").iterdir())) == 2


@pytest.fixture(scope="module")
def clean_label_counts(tmp_path_factory):
    from lungautoseg_train.export import run_export

    root = tmp_path_factory.mktemp("clean_export")
    patient(root)
    report = run_export(root / "dicom", ["Lung_R", "Lung_L"], root / "out", progress=False, workers=1)
    label = read_volume(root / "out" / report["cases"][0]["label"]).array
    return [int((label == v).sum()) for v in (1, 2)]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_each_real_world_input_exports_like_the_clean_case_or_is_skipped_with_its_reason(case: RealInput, tmp_path,
                                                                                         clean_label_counts):
    from lungautoseg_train.export import run_export

    case.write(tmp_path / "input")
    before = fingerprint(tmp_path / "input")
    report = run_export(tmp_path / "input" / "dicom", ["Lung_R", "Lung_L"], tmp_path / "out", progress=False,
                        workers=1)
    assert fingerprint(tmp_path / "input") == before
    (result,) = report["cases"]
    if case.export is not None:
        assert result["status"] == "skipped" and all(w in result["reason"] for w in case.export), result["reason"]
        assert not list((tmp_path / "out" / "labels").iterdir())
        return
    assert result["status"] == "exported", result["reason"]
    label = read_volume(tmp_path / "out" / result["label"]).array
    assert [int((label == v).sum()) for v in (1, 2)] == clean_label_counts  # contours, not pixels, make labels
