"""RTSTRUCT read and write: masks round-trip in every geometry, references and refusals are right."""
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import thorax_phantom as tp
from conftest import GEOMETRIES, dice, make_phantom
from LungAutoSegLib.dicom_io import read_dicom_ct
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.rtstruct import read_roi_masks, write_rtstruct


def test_rt_utils_an_independent_reader_opens_our_rtstruct(tmp_path):
    """Interoperability: rt-utils (which fills every pixel the outline touches) reads each lung back."""
    from rt_utils import RTStructBuilder

    phantom = make_phantom(3, "square_axial")
    ct = tp.write_ct_series(phantom.ct, tmp_path / "ct", "P", generate_uid())
    write_rtstruct(ct, {n: phantom.masks[n] for n in ("Lung_R", "Lung_L")}, tmp_path / "rs.dcm")
    rtstruct = RTStructBuilder.create_from(str(tmp_path / "ct"), str(tmp_path / "rs.dcm"))
    for name in ("Lung_R", "Lung_L"):
        mask = np.transpose(rtstruct.get_roi_mask_by_name(name), (2, 0, 1))  # (row, column, slice) -> (k, j, i)
        assert dice(mask, phantom.masks[name]) >= 0.9, name


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
