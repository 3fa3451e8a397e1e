"""RTSTRUCT through rt-utils: the three rt-utils 1.2.7 bugs stay fixed, and masks round-trip."""
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from rt_utils import RTStructBuilder

import LungAutoSegLib.rtutils_fixes  # noqa: F401  (applies the rt-utils fixes)
import thorax_phantom as tp
from conftest import GEOMETRIES, dice, make_phantom
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.rtstruct import read_roi_masks, write_rtstruct
from LungAutoSegLib.volume import Volume, affine_from_itk

# 60 columns x 40 rows, 0.7 mm between columns and 0.9 mm between rows: any swap shows.
COLUMNS, ROWS, SLICES = 60, 40, 5
COLUMN_SPACING, ROW_SPACING = 0.7, 0.9
ORIGIN = np.array([-20.0, -15.0, 40.0])


@pytest.fixture
def nonsquare_series(tmp_path):
    volume = Volume(np.zeros((SLICES, ROWS, COLUMNS), dtype=np.int16),
                    affine_from_itk((COLUMN_SPACING, ROW_SPACING, 2.0), ORIGIN, np.eye(3)))
    folder = tmp_path / "ct"
    tp.write_ct_series(volume, folder, "NONSQUARE", generate_uid())
    mask = np.zeros((ROWS, COLUMNS, SLICES), dtype=bool)  # rt-utils layout: row, column, slice
    mask[10:20, 30:50, 2] = True
    return folder, mask


def test_rtutils_mask_of_nonsquare_image_round_trips(nonsquare_series, tmp_path):
    folder, mask = nonsquare_series
    rtstruct = RTStructBuilder.create_new(str(folder))
    rtstruct.add_roi(mask=mask, name="Box")
    rtstruct.ds.save_as(tmp_path / "rs.dcm")
    again = RTStructBuilder.create_from(str(folder), str(tmp_path / "rs.dcm"))
    read = again.get_roi_mask_by_name("Box")
    assert read.shape == (ROWS, COLUMNS, SLICES)  # rt-utils 1.2.7 gave (COLUMNS, ROWS, ...)
    assert np.array_equal(read, mask)


def test_rtutils_contours_use_column_spacing_along_rows(nonsquare_series, tmp_path):
    folder, mask = nonsquare_series
    rtstruct = RTStructBuilder.create_new(str(folder))
    rtstruct.add_roi(mask=mask, name="Box")
    points = np.reshape(rtstruct.ds.ROIContourSequence[0].ContourSequence[0].ContourData, (-1, 3))
    # boundary pixel centres: columns 30..49 along x at 0.7 mm, rows 10..19 along y at 0.9 mm
    assert np.isclose(points[:, 0].min(), ORIGIN[0] + 30 * COLUMN_SPACING)
    assert np.isclose(points[:, 0].max(), ORIGIN[0] + 49 * COLUMN_SPACING)
    assert np.isclose(points[:, 1].min(), ORIGIN[1] + 10 * ROW_SPACING)
    assert np.isclose(points[:, 1].max(), ORIGIN[1] + 19 * ROW_SPACING)
    assert np.allclose(points[:, 2], ORIGIN[2] + 2 * 2.0)


def test_rtutils_create_from_warn_only_warns(nonsquare_series, tmp_path):
    folder, mask = nonsquare_series
    rtstruct = RTStructBuilder.create_new(str(folder))
    rtstruct.add_roi(mask=mask, name="Box")
    rtstruct.ds.save_as(tmp_path / "rs.dcm")
    sorted(folder.iterdir())[0].unlink()  # the RTSTRUCT now references a slice that is gone
    with pytest.warns(UserWarning, match="not contained in input series"):
        RTStructBuilder.create_from(str(folder), str(tmp_path / "rs.dcm"), warn_only=True)
    with pytest.raises(Exception, match="not contained in input series"):
        RTStructBuilder.create_from(str(folder), str(tmp_path / "rs.dcm"))


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_project_masks_round_trip_in_every_geometry(tmp_path, geometry):
    phantom = make_phantom(3, geometry)
    ct = tp.write_ct_series(phantom.ct, tmp_path / "ct", "P", generate_uid(), geometry == "descending")
    masks = {name: phantom.masks[name] for name in ("Lung_R", "Lung_L", "SpinalCord")}
    path = write_rtstruct(ct, masks, tmp_path / "rs.dcm")
    read = read_roi_masks(path, read_dicom_ct(tmp_path / "ct"), list(masks))
    assert not read.warnings
    for name, mask in masks.items():
        assert dice(read.masks[name], mask) >= 0.99, name
    rs = pydicom.dcmread(path)
    referenced = {c.ReferencedSOPInstanceUID for c in
                  rs.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
                  .RTReferencedSeriesSequence[0].ContourImageSequence}
    assert referenced == set(ct.sop_uids)
    assert [r.ROIName for r in rs.StructureSetROISequence] == list(masks)
    assert list(rs.ROIContourSequence[0].ROIDisplayColor) == [80, 160, 220]
    contours = [c for roi in rs.ROIContourSequence for c in roi.ContourSequence]
    assert max(len(str(value)) for c in contours for value in c.ContourData) <= 16  # DICOM's DS limit
    normal = ct.volume.ijk_to_lps[:3, 2] / np.linalg.norm(ct.volume.ijk_to_lps[:3, 2])
    plane_of = {d.SOPInstanceUID: float(np.dot(d.ImagePositionPatient, normal)) for d in ct.datasets}
    for c in contours:  # each contour names the slice it lies on
        heights = np.reshape(np.asarray(c.ContourData, float), (-1, 3)) @ normal
        assert np.allclose(heights, plane_of[c.ContourImageSequence[0].ReferencedSOPInstanceUID], atol=0.01)


def test_contours_without_image_references_are_placed_by_geometry(tmp_path):
    phantom = make_phantom(3, "oblique")
    ct = tp.write_ct_series(phantom.ct, tmp_path / "ct", "P", generate_uid())
    path = write_rtstruct(ct, {"Lung_R": phantom.masks["Lung_R"]}, tmp_path / "rs.dcm")
    rs = pydicom.dcmread(path)
    for contour in rs.ROIContourSequence[0].ContourSequence:
        del contour.ContourImageSequence  # Type 3: some planning systems leave it out
    rs.save_as(path)
    read = read_roi_masks(path, ct, ["Lung_R"])
    assert dice(read.masks["Lung_R"], phantom.masks["Lung_R"]) >= 0.99


def test_rtstruct_on_another_frame_of_reference_is_refused(tmp_path):
    phantom = make_phantom(3)
    ct = tp.write_ct_series(phantom.ct, tmp_path / "ct", "P", generate_uid())
    path = write_rtstruct(ct, {"Lung_R": phantom.masks["Lung_R"]}, tmp_path / "rs.dcm")
    rs = pydicom.dcmread(path)
    rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = generate_uid()
    rs.save_as(path)
    with pytest.raises(InputError, match="frame of reference"):
        read_roi_masks(path, ct, ["Lung_R"])


def test_existing_rtstruct_is_not_overwritten(tmp_path):
    phantom = make_phantom(3)
    ct = tp.write_ct_series(phantom.ct, tmp_path / "ct", "P", generate_uid())
    path = tmp_path / "rs.dcm"
    path.write_bytes(b"the user's file")
    with pytest.raises(InputError, match="exists already"):
        write_rtstruct(ct, {"Lung_R": phantom.masks["Lung_R"]}, path)
    assert path.read_bytes() == b"the user's file"
    write_rtstruct(ct, {"Lung_R": phantom.masks["Lung_R"]}, path, overwrite=True)
    assert pydicom.dcmread(path).Modality == "RTSTRUCT"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
