"""The MRML bridge on Slicer's real MRML (slicer-core): exact round trips, right stays right."""
import numpy as np
import pytest
import slicer  # slicer-core: Slicer's MRML without Qt (test extra)
import vtk

from conftest import make_phantom
from LungAutoSegLib.mrml_bridge import labels_to_segmentation_node, segment_mask, volume_from_node, volume_to_node
from LungAutoSegLib.structures import STRUCTURES, structure_entries

GEOMETRIES = ["square_axial", "nonsquare_unequal", "x_flipped", "oblique"]


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
def test_labels_become_named_coloured_segments_on_the_ct_grid_and_come_back_exactly(geometry):
    phantom = make_phantom(6, geometry)
    labels = phantom.ct.with_array(labels_of(phantom))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    structures = structure_entries(["Lung_R", "Lung_L"])
    assert labels_to_segmentation_node(labels, structures, node) == ["Lung_R", "Lung_L"]
    for structure in structures:
        mask = segment_mask(node, structure["name"], phantom.ct)
        assert np.array_equal(mask, labels.array == structure["label"])
    right = segment_mask(node, "Lung_R", phantom.ct)
    assert phantom.ct.centroid_lps(right)[0] < -40  # right is -x in LPS, on flipped and oblique grids too
    segmentation = node.GetSegmentation()
    segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName("Lung_R"))
    assert np.allclose(segment.GetColor(), np.array(STRUCTURES["Lung_R"].colour) / 255)
    tag = vtk.reference("")
    segment.GetTag("TerminologyEntry", tag)
    assert "SCT^39607008^Lung~SCT^24028007^Right" in str(tag)


def test_replacing_a_segment_keeps_one_of_that_name():
    phantom = make_phantom(7, "square_axial")
    labels = phantom.ct.with_array(labels_of(phantom))
    node = slicer.vtkMRMLScene().AddNewNodeByClass("vtkMRMLSegmentationNode")
    structures = structure_entries(["Lung_R"])
    labels_to_segmentation_node(labels, structures, node)
    labels_to_segmentation_node(labels.with_array(np.zeros_like(labels.array)), structures, node)
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    assert not segment_mask(node, "Lung_R", phantom.ct).any()
