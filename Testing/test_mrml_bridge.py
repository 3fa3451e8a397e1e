"""The MRML bridge on Slicer's real MRML (slicer-core): exact round trips, right stays right."""
import numpy as np
import pytest
import slicer  # slicer-core: Slicer's MRML without Qt (test extra)
import vtk

from conftest import make_phantom
from slicer_standin.segmentations import register_converter_rules
from LungAutoSegLib.mrml_bridge import load_segments, ras_from_lps, segment_mask, volume_from_node, volume_to_node
from LungAutoSegLib.segmentation_io import write_seg_nrrd
from LungAutoSegLib.structures import STRUCTURES, structure_entries

GEOMETRIES = ["square_axial", "nonsquare_unequal", "x_flipped", "oblique"]
register_converter_rules()  # as Slicer's Segmentations module does at startup


def labels_of(phantom) -> np.ndarray:
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    return labels


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_a_ct_round_trips_through_a_volume_node_exactly(geometry):
    ct = make_phantom(5, geometry).ct
    scene = slicer.vtkMRMLScene()
    node = scene.AddNode(volume_to_node(ct))
    back = volume_from_node(node)
    assert np.array_equal(back.array, ct.array) and np.allclose(back.ijk_to_lps, ct.ijk_to_lps, atol=1e-9)
    ras = np.array([node.GetOrigin()])  # Slicer sees the same origin, in RAS
    assert np.allclose(ras[0], ct.origin * [-1, -1, 1], atol=1e-6)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_the_engines_segments_load_named_coloured_on_the_ct_grid_exactly(geometry, tmp_path):
    phantom = make_phantom(6, geometry)
    labels = phantom.ct.with_array(labels_of(phantom))
    structures = structure_entries(["Lung_R", "Lung_L"])
    write_seg_nrrd(labels, structures, tmp_path / "ct.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert load_segments(tmp_path / "ct.seg.nrrd", node) == ["Lung_R", "Lung_L"]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 1  # the file's own node is gone
    for structure in structures:
        mask = segment_mask(node, structure["name"], phantom.ct)
        assert np.array_equal(mask, labels.array == structure["label"])
    right = segment_mask(node, "Lung_R", phantom.ct)
    assert phantom.ct.centroid_lps(right)[0] < -40  # right is -x in LPS, on flipped and oblique grids too
    segmentation = node.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Lung_R"))
    assert np.allclose(segment.GetColor(), np.array(STRUCTURES["Lung_R"].colour) / 255, atol=1e-3)
    tag = vtk.reference("")
    segment.GetTag("TerminologyEntry", tag)
    assert "SCT^39607008^Lung~SCT^24028007^Right" in str(tag)


def test_loading_again_replaces_same_named_segments_and_keeps_the_users_own(tmp_path):
    phantom = make_phantom(7, "square_axial")
    labels = phantom.ct.with_array(labels_of(phantom))
    write_seg_nrrd(labels, structure_entries(["Lung_R"]), tmp_path / "first.seg.nrrd")
    write_seg_nrrd(labels.with_array(np.zeros_like(labels.array)), structure_entries(["Lung_R"]),
                   tmp_path / "empty.seg.nrrd")
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.GetSegmentation().AddEmptySegment("my_ptv", "my_ptv")
    load_segments(tmp_path / "first.seg.nrrd", node)
    assert segment_mask(node, "Lung_R", phantom.ct).sum() == phantom.masks["Lung_R"].sum()
    load_segments(tmp_path / "empty.seg.nrrd", node)
    names = [node.GetSegmentation().GetNthSegment(i).GetName() for i in range(3)
             if node.GetSegmentation().GetNthSegment(i)]
    assert sorted(names) == ["Lung_R", "my_ptv"]
    assert not segment_mask(node, "Lung_R", phantom.ct).any()


def test_lps_points_become_ras():
    assert ras_from_lps([10.0, -20.0, 30.0]) == [-10.0, 20.0, 30.0]
