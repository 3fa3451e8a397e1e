"""CT reading from DICOM: geometry in every orientation, and clear refusals of bad series."""
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import thorax_phantom as tp
from bad_inputs import edit
from conftest import GEOMETRIES, make_phantom, shared_data
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.dicom_scan import scan_dicom
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.ct_reader import read_ct


def write_series(folder: Path, geometry="square_axial", seed=0) -> tp.Phantom:
    phantom = make_phantom(seed, geometry)
    tp.write_ct_series(phantom.ct, folder, f"P{seed}", generate_uid(), descending=geometry == "descending")
    return phantom


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_read_back_puts_every_voxel_at_its_position(tmp_path, geometry):
    phantom = write_series(tmp_path, geometry)
    ct = read_dicom_ct(tmp_path)
    assert ct.volume.array.dtype == np.int16
    assert np.array_equal(ct.volume.array, phantom.ct.array)  # rescale applied, HU exact
    assert np.allclose(ct.volume.ijk_to_lps, phantom.ct.ijk_to_lps, atol=1e-4)
    right = ct.volume.centroid_lps(phantom.masks["Lung_R"])
    assert right[0] < -40  # patient right from the direction cosines, not an index
    positions = [np.dot(np.cross(*np.reshape(d.ImageOrientationPatient, (2, 3))), d.ImagePositionPatient)
                 for d in ct.datasets]
    assert np.all(np.diff(positions) > 0)  # headers sorted along the normal


def test_file_order_and_instance_numbers_do_not_matter(tmp_path):
    write_series(tmp_path / "a", "descending")
    files = sorted((tmp_path / "a").iterdir())
    forward = read_dicom_ct(files[::-1]).volume
    backward = read_dicom_ct(files).volume
    assert np.array_equal(forward.array, backward.array)


def edit_slices(folder: Path, change) -> None:
    edit(sorted(folder.iterdir()), change)


def expect_error(folder, *words, **kwargs):
    with pytest.raises(InputError) as error:
        read_dicom_ct(folder, **kwargs)
    for word in words:
        assert word in str(error.value)
    assert str(folder) in str(error.value) or "dcm" in str(error.value)
    return str(error.value)


def test_missing_slice_is_refused(tmp_path):
    write_series(tmp_path)
    sorted(tmp_path.iterdir())[7].unlink()
    expect_error(tmp_path, "missing slice")


def test_duplicated_position_is_refused(tmp_path):
    write_series(tmp_path)
    source = sorted(tmp_path.iterdir())[5]
    ds = pydicom.dcmread(source)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "copy.dcm")
    expect_error(tmp_path, "duplicated slice positions")


def test_uneven_spacing_is_refused(tmp_path):
    write_series(tmp_path)

    def squeeze(n, ds):
        if n > 10:
            ds.ImagePositionPatient[2] -= 3.0
    edit_slices(tmp_path, squeeze)
    expect_error(tmp_path, "uneven slice spacing")


def test_gantry_tilt_is_refused(tmp_path):
    write_series(tmp_path)

    def tilt(n, ds):
        ds.ImagePositionPatient[1] += n * np.tan(np.radians(15)) * 10.0
    edit_slices(tmp_path, tilt)
    expect_error(tmp_path, "gantry tilt of 15.0 degrees")


def test_mr_series_is_not_a_ct(tmp_path):
    write_series(tmp_path)
    edit_slices(tmp_path, lambda n, ds: setattr(ds, "Modality", "MR"))
    expect_error(tmp_path, "no DICOM CT series", "MR")


def test_two_series_are_listed_and_one_can_be_chosen(tmp_path):
    first = write_series(tmp_path / "x", seed=1)
    write_series(tmp_path / "y", seed=2)
    uids = sorted(s.uid for s in scan_dicom(tmp_path).ct_series())
    message = expect_error(tmp_path, "2 CT series found", "--series", *uids)
    chosen_uid = pydicom.dcmread(next((tmp_path / "x").iterdir())).SeriesInstanceUID
    assert chosen_uid in message
    chosen = read_dicom_ct(tmp_path, series_uid=chosen_uid)
    assert np.array_equal(chosen.volume.array, first.ct.array)


@pytest.mark.parametrize("spacing", [[0, 0.7], [-1, 0.7], None])
def test_bad_pixel_spacing_is_refused(tmp_path, spacing):
    write_series(tmp_path)

    def set_spacing(n, ds):
        if spacing is None:
            del ds.PixelSpacing
        else:
            ds.PixelSpacing = spacing
    edit_slices(tmp_path, set_spacing)
    expect_error(tmp_path, "PixelSpacing")


def test_non_orthonormal_orientation_is_refused(tmp_path):
    write_series(tmp_path)
    edit_slices(tmp_path, lambda n, ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0.3, 1, 0]))
    expect_error(tmp_path, "not orthonormal")


def test_truncated_file_is_named(tmp_path):
    write_series(tmp_path)
    victim = sorted(tmp_path.iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:2000])
    files = sorted(tmp_path.iterdir())
    with pytest.raises(InputError) as error:
        read_dicom_ct(files)
    assert victim.name in str(error.value)


def test_empty_folder_and_non_dicom_files(tmp_path):
    expect_error(tmp_path, "no DICOM CT series")
    (tmp_path / "notes.txt").write_text("not a CT")
    expect_error(tmp_path, "no DICOM CT series")


def test_real_lidc_slab_reads_with_its_geometry():
    folder = shared_data("real", "lidc_idri_slabs", "small", "LIDC-IDRI-0001")
    ct = read_dicom_ct(folder)
    first = ct.datasets[0]
    assert ct.volume.array.shape == (16, 512, 512)
    assert np.allclose(ct.volume.origin, [float(v) for v in first.ImagePositionPatient])
    assert np.allclose(ct.volume.spacing[:2], [float(first.PixelSpacing[1]), float(first.PixelSpacing[0])])
    assert -1100 < np.median(ct.volume.array) < 100  # HU, not stored values
    # the same slices read by SimpleITK's GDCM reader land on the same grid
    import SimpleITK as sitk
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in ct_files(ct)])  # our order: along the normal
    image = reader.Execute()
    assert np.allclose(image.GetOrigin(), ct.volume.origin, atol=1e-3)
    assert np.allclose(np.reshape(image.GetDirection(), (3, 3)), ct.volume.direction, atol=1e-6)
    assert np.array_equal(sitk.GetArrayFromImage(image), ct.volume.array)


def ct_files(ct):
    folder = shared_data("real", "lidc_idri_slabs", "small", "LIDC-IDRI-0001")
    by_uid = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in folder.rglob("*.dcm")}
    return [by_uid[uid] for uid in ct.sop_uids]


def test_read_ct_dispatches_on_input(tmp_path):
    write_series(tmp_path / "dicom")
    assert read_ct(tmp_path / "dicom").volume.array.shape == (20, 96, 96)
    with pytest.raises(InputError, match="no such file"):
        read_ct(tmp_path / "absent.nrrd")
