"""NRRD / NIfTI / MHA carry the exact geometry; NIfTI is checked by an independent reader."""
import nibabel
import numpy as np
import pytest

from conftest import make_phantom
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.ct_reader import read_ct
from LungAutoSegLib.image_io import read_volume, write_volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@pytest.mark.parametrize("suffix", [".nrrd", ".nii.gz", ".mha"])
@pytest.mark.parametrize("geometry", ["nonsquare_unequal", "x_flipped", "oblique"])
def test_round_trip_keeps_voxels_and_geometry(tmp_path, suffix, geometry):
    phantom = make_phantom(2, geometry)
    label = phantom.ct.with_array(phantom.masks["Lung_R"].astype(np.uint8))
    path = write_volume(label, tmp_path / f"label{suffix}")
    again = read_volume(path)
    assert again.array.dtype == np.uint8
    assert np.array_equal(again.array, label.array)
    assert np.allclose(again.ijk_to_lps, label.ijk_to_lps, atol=1e-4)
    assert again.centroid_lps(again.array > 0)[0] < -40  # still the patient's right
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"label{suffix}"]  # no temporary left


def test_nifti_affine_read_by_nibabel_is_the_ras_of_ours(tmp_path):
    phantom = make_phantom(2, "oblique")
    write_volume(phantom.ct, tmp_path / "ct.nii.gz")
    image = nibabel.load(tmp_path / "ct.nii.gz")
    assert np.allclose(image.affine, LPS_TO_RAS @ phantom.ct.ijk_to_lps, atol=1e-3)
    # nibabel indexes (i, j, k); ours is [k, j, i]
    assert np.array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), phantom.ct.array)


def test_write_refuses_to_replace_without_overwrite(tmp_path):
    phantom = make_phantom(2)
    path = tmp_path / "ct.nrrd"
    path.write_text("user data")
    with pytest.raises(InputError, match="exists already"):
        write_volume(phantom.ct, path, overwrite=False)
    assert path.read_text() == "user data"


def test_nan_image_is_refused(tmp_path):
    # NRRD keeps NaN; SimpleITK's NIfTI reader turns NaN into 0 (see image_io.read_volume)
    phantom = make_phantom(2)
    array = phantom.ct.array.astype(np.float32)
    array[3, 10, 10] = np.nan
    write_volume(phantom.ct.with_array(array), tmp_path / "nan.nrrd")
    with pytest.raises(InputError, match="NaN"):
        read_ct(tmp_path / "nan.nrrd")


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "broken.nrrd"
    path.write_text("NRRD0004\nnot really\n")
    with pytest.raises(InputError, match="broken.nrrd"):
        read_volume(path)
