"""RTSTRUCTs as clinics send them: the standard fill rule, holes, repeats, tumour exclusion, DICOM SEG."""
import csv
import glob
import re

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import thorax_phantom as tp
from conftest import GEOMETRIES, dice, make_phantom, shared_data
from LungAutoSegLib.contours import fill_even_odd, trace_slice
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.dicom_scan import scan_dicom
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.rtstruct import read_roi_masks, write_rtstruct
from LungAutoSegLib.structures import AliasTable
from LungAutoSegLib.volume import Volume, affine_from_itk
from lungautoseg_train.dicom_seg import read_seg_masks
from lungautoseg_train.export import Exclusion, run_export


def test_a_voxel_belongs_when_its_centre_is_inside_and_nested_polygons_combine_even_odd():
    outer = np.array([[1.5, 1.5], [8.5, 1.5], [8.5, 6.5], [1.5, 6.5]])  # centres 2..8 x 2..6
    hole = np.array([[3.5, 2.5], [5.5, 2.5], [5.5, 4.5], [3.5, 4.5]])   # centres 4..5 x 3..4
    between = np.array([[4.2, 3.2], [4.8, 3.2], [4.8, 3.8], [4.2, 3.8]])  # between centres: fills nothing
    tiny = np.array([[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]])               # fills no pixel centre
    mask = fill_even_odd([outer, hole, between, tiny], (9, 10))
    expected = np.zeros((9, 10), bool)
    expected[2:7, 2:9] = True
    expected[3:5, 4:6] = False
    assert np.array_equal(mask, expected)
    # an outline that only touches pixels (OpenCV's fillPoly would count them) adds nothing
    assert not fill_even_odd([np.array([[2.1, 2.1], [2.9, 2.1], [2.9, 2.9], [2.1, 2.9]])], (9, 10)).any()


@pytest.mark.parametrize("seed", range(20))
def test_traced_outlines_fill_back_to_exactly_the_mask(seed):
    rng = np.random.default_rng(seed)
    from scipy import ndimage
    mask = ndimage.gaussian_filter(rng.random((37, 53)), 1.2 + seed % 3) > 0.5
    mask ^= rng.random(mask.shape) < 0.02  # single pixels, diagonal contacts, pinholes
    assert np.array_equal(fill_even_odd(trace_slice(mask), mask.shape), mask)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_an_rtstruct_written_then_read_gives_back_exactly_the_label_voxels(geometry, tmp_path):
    phantom = make_phantom(5, geometry)
    dicom = tp.write_ct_series(phantom.ct, tmp_path / "ct", "RT-ROUNDTRIP", generate_uid(),
                               descending=geometry == "descending")
    masks = {name: phantom.masks[name] for name in ("Lung_R", "Lung_L", "Heart")}
    masks["Lung_R"] = masks["Lung_R"].copy()
    masks["Lung_R"][:, ::7, ::5] = False  # holes and pinholes that a fill rule must keep
    write_rtstruct(dicom, masks, tmp_path / "rs.dcm")
    read = read_roi_masks(tmp_path / "rs.dcm", read_dicom_ct(tmp_path / "ct"), list(masks))
    for name, mask in masks.items():
        assert np.array_equal(read.masks[name], mask), name


def _square_ct(tmp_path):
    volume = Volume(np.zeros((3, 40, 60), np.int16), affine_from_itk((0.7, 0.9, 3.0), (-20.0, -15.0, 40.0), np.eye(3)))
    tp.write_ct_series(volume, tmp_path / "ct", "XIO", generate_uid())
    return read_dicom_ct(tmp_path / "ct")


def test_repeats_of_an_outline_are_found_geometrically_and_dropped(tmp_path):
    """The XiO export writes an outline dozens of times, each copy starting at an extra vertex
    0.04-0.07 mm off it: even-odd would cut an even number of copies out of the lung."""
    ct = _square_ct(tmp_path)
    mask = np.zeros(ct.volume.array.shape, bool)
    mask[1, 8:30, 10:50] = True
    write_rtstruct(ct, {"Lung_R": mask}, tmp_path / "rs.dcm")
    ds = pydicom.dcmread(tmp_path / "rs.dcm")
    contours = ds.ROIContourSequence[0].ContourSequence
    original = contours[0]
    points = np.reshape(np.asarray(original.ContourData, float), (-1, 3))
    rng = np.random.default_rng(0)
    for copy in range(5):  # 1 + 5 copies: six outlines, an even number
        start = np.roll(points, -3 * copy, axis=0)
        between = (start[-1] + start[0]) / 2
        direction = np.cross(start[0] - start[-1], [0, 0, 1])
        extra = between + direction / np.linalg.norm(direction) * rng.uniform(0.04, 0.07)
        repeated = pydicom.Dataset()
        repeated.ContourGeometricType = "CLOSED_PLANAR"
        repeated.ContourImageSequence = original.ContourImageSequence
        repeated.ContourData = [f"{v:.4f}" for v in np.vstack([extra, start]).ravel()]
        repeated.NumberOfContourPoints = len(start) + 1
        contours.append(repeated)
    ds.save_as(tmp_path / "xio.dcm")
    read = read_roi_masks(tmp_path / "xio.dcm", ct, ["Lung_R"])
    assert np.array_equal(read.masks["Lung_R"], mask)
    assert any("5 repeated outlines dropped" in w for w in read.warnings)


def test_clinical_roi_names_are_recognised():
    aliases = AliasTable()
    assert [aliases.identify(n) for n in ("Lung-Right", "Lung-Left", "Spinal-Cord", "Lung R", "Lt Lung")] == \
        ["Lung_R", "Lung_L", "SpinalCord", "Lung_R", "Lung_L"]
    assert Exclusion(("GTV*",)).matches(["GTV-1", "gtv-2", "Lung-Right", "CTV"]) == ["GTV-1", "gtv-2"]


def test_export_cuts_the_tumour_out_and_ignores_it_with_a_margin(tmp_path):
    phantom = tp.render(tp.make_anatomy(3), tp.make_grid((96, 96, 40), (3.0, 3.0, 3.0)))
    centre = phantom.ct.centroid_lps(phantom.masks["Lung_R"])
    points = phantom.ct.voxel_centres_lps()
    distance = np.linalg.norm(points - centre, axis=-1)
    tumour = distance < 15  # partly inside Lung_R, as the clinic's lung contours include tumour
    patient = tmp_path / "dicom" / "P1"
    dicom = tp.write_ct_series(phantom.ct, patient / "ct", "P1", generate_uid())
    write_rtstruct(dicom, {"Lung-Right": phantom.masks["Lung_R"], "Lung-Left": phantom.masks["Lung_L"],
                           "GTV-1": tumour}, patient / "rs.dcm")
    report = run_export(tmp_path / "dicom", ["Lung_R", "Lung_L"], tmp_path / "out", progress=False, workers=1,
                        exclusion=Exclusion(("gtv*",), margin_mm=8.0))
    case = report["cases"][0]
    assert case["status"] == "exported" and case["excluded"] == ["GTV-1"]
    label = read_volume(tmp_path / "out" / case["label"]).array
    ignore = read_volume(tmp_path / "out" / case["ignore"]).array > 0
    assert not (label[tumour] > 0).any()
    assert np.array_equal(label == 1, phantom.masks["Lung_R"] & ~tumour)
    assert ignore[tumour].all()
    assert ignore[distance < 15 + 8 - 2.6].all()  # within the margin, less half a voxel's diagonal
    assert not ignore[distance > 15 + 8].any()
    row = next(csv.DictReader((tmp_path / "out" / "dataset.csv").open()))
    assert row["ignore"] == case["ignore"]


STRUCTURES = ["Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord"]
README_VOLUMES_ML = {  # ../shared/data/real/nsclc_radiomics_lung1/README.md; no Heart on 004 and 009
    "LUNG1-004": {"Lung_R": 2804.0, "Lung_L": 2227.0, "Esophagus": 35.6, "SpinalCord": 53.5},
    "LUNG1-005": {"Lung_R": 1398.5, "Lung_L": 1576.3, "Heart": 767.4, "Esophagus": 55.2, "SpinalCord": 67.7},
    "LUNG1-006": {"Lung_R": 3768.8, "Lung_L": 2771.8, "Heart": 872.1, "Esophagus": 51.2, "SpinalCord": 85.1},
    "LUNG1-008": {"Lung_R": 1282.5, "Lung_L": 1332.6, "Heart": 620.6, "Esophagus": 50.9, "SpinalCord": 78.5},
    "LUNG1-009": {"Lung_R": 1553.6, "Lung_L": 2230.8, "Esophagus": 46.5, "SpinalCord": 67.3},
    "LUNG1-010": {"Lung_R": 1815.4, "Lung_L": 1765.7, "Heart": 528.2, "Esophagus": 44.2, "SpinalCord": 61.8},
}
ROI_NAMES = {"Lung_R": "Lung-Right", "Lung_L": "Lung-Left", "Heart": "Heart", "Esophagus": "Esophagus",
             "SpinalCord": "Spinal-Cord"}


def test_the_six_nsclc_planning_cts_export_every_structure_they_have_with_the_readme_volumes(tmp_path):
    """All six cases export; a case without a Heart contour keeps the others and lists what it has
    (the Heart unlabelled, not background); every label is the RTSTRUCT's contour less the tumour
    (and less what an earlier structure took), whose volume is the README's within 1%."""
    root = shared_data("real", "nsclc_radiomics_lung1")
    report = run_export(root, STRUCTURES, tmp_path / "out", progress=False, exclusion=Exclusion(("GTV*",)))
    assert report["summary"]["exported"] == 6 and report["summary"]["partially_labelled"] == 2
    rows = {r["case"]: r for r in csv.DictReader((tmp_path / "out" / "dataset.csv").open())}
    for case in report["cases"]:
        expected = README_VOLUMES_ML[case["case"]]
        assert case["labelled"] == [s for s in STRUCTURES if s in expected]
        assert rows[case["case"]]["labelled"].split() == case["labelled"]
        assert case["missing"] == [s for s in STRUCTURES if s not in expected]
        assert case["matched"] == {s: ROI_NAMES[s] for s in expected}
        assert case["excluded"] and all(re.fullmatch(r"(?i)gtv-\d", n) for n in case["excluded"])
        label = read_volume(tmp_path / "out" / case["label"])
        ignore = read_volume(tmp_path / "out" / case["ignore"]).array > 0
        ml = float(np.prod(label.spacing)) / 1000
        ct = read_dicom_ct(next(s for s in scan_dicom(root).ct_series() if s.uid == case["series_uid"]).files)
        rois = read_roi_masks(case["rtstruct"], ct, [ROI_NAMES[s] for s in expected] + case["excluded"]).masks
        tumour = np.logical_or.reduce([rois[n] for n in case["excluded"]])
        assert ignore[tumour].all()
        taken = tumour.copy()
        for value, structure in enumerate(STRUCTURES, start=1):
            if structure not in expected:
                assert not (label.array == value).any(), (case["case"], structure)
                continue
            contour = rois[ROI_NAMES[structure]]
            assert np.array_equal(label.array == value, contour & ~taken), (case["case"], structure)
            taken |= contour
            assert abs(contour.sum() * ml - expected[structure]) <= 0.01 * expected[structure], \
                (case["case"], structure, contour.sum() * ml, expected[structure])


def test_dicom_seg_and_rtstruct_give_the_same_structures_on_the_nsclc_cts():
    """These SEG objects hold the primary tumour only (no lungs): their one shared structure is
    compared; lungs written to a SEG are compared on a phantom below."""
    root = shared_data("real", "nsclc_radiomics_lung1")
    scan = scan_dicom(root)
    for series in scan.ct_series():
        ct = read_dicom_ct(series.files)
        seg_path = glob.glob(str(root / series.patient_id / "*" / "*Segmentation*" / "*.dcm"))[0]
        seg = read_seg_masks(seg_path, ct, ["Neoplasm, Primary"])["Neoplasm, Primary"]
        rtstruct = read_roi_masks(scan.rtstructs_for(series)[0].path, ct, ["GTV-1"]).masks["GTV-1"]
        assert dice(seg, rtstruct) >= 0.98, series.patient_id


def test_lungs_written_as_a_dicom_seg_read_back_as_the_rtstruct_lungs(tmp_path):
    import highdicom as hd

    phantom = make_phantom(8, "descending")
    dicom = tp.write_ct_series(phantom.ct, tmp_path / "ct", "SEG", generate_uid(), descending=True)
    ct = read_dicom_ct(tmp_path / "ct")
    write_rtstruct(ct, {n: phantom.masks[n] for n in ("Lung_R", "Lung_L")}, tmp_path / "rs.dcm")
    sources = [pydicom.dcmread(f) for f in sorted((tmp_path / "ct").iterdir())]
    by_uid = {ds.SOPInstanceUID: n for n, ds in enumerate(dicom.datasets)}
    sources.sort(key=lambda ds: by_uid[ds.SOPInstanceUID])
    pixels = np.stack([phantom.masks["Lung_R"], phantom.masks["Lung_L"]], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(name="test", version="1", family=hd.sr.CodedConcept(
        "123109", "DCM", "Manual Processing"))
    descriptions = [hd.seg.SegmentDescription(
        segment_number=n + 1, segment_label=name, segmented_property_category=hd.sr.CodedConcept(
            "123037004", "SCT", "Anatomical Structure"),
        segmented_property_type=hd.sr.CodedConcept("39607008", "SCT", "Lung"),
        algorithm_type="SEMIAUTOMATIC", algorithm_identification=algorithm) for n, name in enumerate(("R", "L"))]
    seg = hd.seg.Segmentation(sources, pixels, "BINARY", descriptions, generate_uid(), 1, generate_uid(), 1,
                              "test", "test", "1", "1")
    seg.save_as(tmp_path / "seg.dcm")
    from_seg = read_seg_masks(tmp_path / "seg.dcm", ct, ["R", "L"])
    from_rtstruct = read_roi_masks(tmp_path / "rs.dcm", ct, ["Lung_R", "Lung_L"]).masks
    assert np.array_equal(from_seg["R"], from_rtstruct["Lung_R"])
    assert np.array_equal(from_seg["L"], from_rtstruct["Lung_L"])
