import numpy as np

import thorax_phantom as tp
from conftest import make_phantom


def test_anatomy_is_seeded_and_varies():
    a, b, c = make_phantom(1), make_phantom(1), make_phantom(2)
    assert np.array_equal(a.ct.array, b.ct.array)
    assert not np.array_equal(a.ct.array, c.ct.array)


def test_right_lung_is_on_patient_right_in_every_orientation():
    for orientation in tp.ORIENTATIONS:
        phantom = tp.render(tp.make_anatomy(4), tp.make_grid((80, 80, 20), (4.5, 4.5, 10), orientation))
        right = phantom.ct.centroid_lps(phantom.masks["Lung_R"])
        left = phantom.ct.centroid_lps(phantom.masks["Lung_L"])
        assert right[0] < -40 and left[0] > 40, orientation  # LPS: right is -x
        assert phantom.ct.centroid_lps(phantom.masks["SpinalCord"])[1] > 40  # posterior


def test_tissues_have_realistic_hounsfield_units():
    phantom = make_phantom(5)
    hu, masks = phantom.ct.array, phantom.masks
    assert -900 < np.median(hu[masks["Lung_R"]]) < -780  # aerated lung
    assert 20 < np.median(hu[masks["Heart"]]) < 70  # blood
    assert np.median(hu[phantom.ct.array < -990]) <= -1000 + 60  # air outside
    assert (hu > 500).sum() > 100  # ribs and spine
    vessels = masks["Lung_R"] & (hu > -300)
    assert 0.002 < vessels.sum() / masks["Lung_R"].sum() < 0.2  # vessels inside the lung mask


def test_structures_do_not_overlap_the_lungs():
    masks = make_phantom(6).masks
    lungs = masks["Lung_R"] | masks["Lung_L"]
    for other in ("Heart", "Esophagus", "SpinalCord"):
        assert not (lungs & masks[other]).any(), other
    assert not (masks["Lung_R"] & masks["Lung_L"]).any()


def test_command_writes_lctsc_layout_and_truth(tmp_path):
    assert tp.main(["--out", str(tmp_path), "--cases", "1", "--shape", "48", "48", "12",
                    "--spacing", "7", "7", "20"]) == 0
    study = next((tmp_path / "dicom" / "PHANTOM-000").iterdir())
    assert len(list((study / "CT").glob("*.dcm"))) == 12
    assert (study / "RTSTRUCT" / "RS.phantom.dcm").is_file()
    assert {p.name for p in (tmp_path / "truth").iterdir()} == {
        f"PHANTOM-000_{name}.nrrd" for name in tp.STRUCTURES}
