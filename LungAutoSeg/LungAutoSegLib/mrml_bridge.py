"""The MRML bridge: engine volumes <-> Slicer volume nodes, the engine's segments into segmentation nodes.

The only engine module that imports ``slicer`` (Slicer's own Python, or ``slicer-core``
from PyPI in tests). MRML works in RAS, the engine in LPS: the conversion is one fixed
matrix, applied here and nowhere else.
"""
from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .volume import Volume

RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])  # its own inverse
BINARY_LABELMAP = "Binary labelmap"


def _to_vtk_matrix(matrix: np.ndarray) -> vtk.vtkMatrix4x4:
    result = vtk.vtkMatrix4x4()
    for row in range(4):
        for column in range(4):
            result.SetElement(row, column, float(matrix[row, column]))
    return result


def _from_vtk_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(row, column) for column in range(4)] for row in range(4)])


def _image_data(array: np.ndarray, image=None):
    """vtkImageData (or a subclass instance given) holding ``array[k, j, i]``, x fastest."""
    image = image if image is not None else vtk.vtkImageData()
    k, j, i = array.shape
    image.SetDimensions(i, j, k)
    scalars = numpy_support.numpy_to_vtk(np.ascontiguousarray(array).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    return image


def _array(image) -> np.ndarray:
    i, j, k = image.GetDimensions()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k, j, i).copy()


def volume_to_node(volume: Volume, node=None):
    """A ``vtkMRMLScalarVolumeNode`` (new, or ``node``) holding ``volume``."""
    node = node if node is not None else slicer.vtkMRMLScalarVolumeNode()
    node.SetIJKToRASMatrix(_to_vtk_matrix(RAS_FROM_LPS @ volume.ijk_to_lps))
    node.SetAndObserveImageData(_image_data(volume.array))
    return node


def volume_from_node(node) -> Volume:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return Volume(_array(node.GetImageData()), RAS_FROM_LPS @ _from_vtk_matrix(matrix))


def _oriented_image(array: np.ndarray, ijk_to_lps: np.ndarray):
    image = _image_data(array.astype(np.uint8), slicer.vtkOrientedImageData())
    image.SetImageToWorldMatrix(_to_vtk_matrix(RAS_FROM_LPS @ ijk_to_lps))
    return image


def load_segments(path, target) -> list[str]:
    """The engine's .seg.nrrd (names, colours, terminology as it wrote them) into the segmentation
    node ``target``, on the file's grid (the CT's); a segment of the same name is replaced, the
    others (a user's own) are kept. Returns the loaded segments' names."""
    scene = target.GetScene()
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    try:
        storage.SetFileName(str(path))
        if not storage.ReadData(loaded):
            raise RuntimeError(f"could not read the segmentation {path}")
        source, segmentation = loaded.GetSegmentation(), target.GetSegmentation()
        names = []
        for index in range(source.GetNumberOfSegments()):
            name = source.GetNthSegment(index).GetName()
            existing = segmentation.GetSegmentIdBySegmentName(name)
            if existing:
                segmentation.RemoveSegment(existing)
            segmentation.CopySegmentFromSegmentation(source, source.GetNthSegmentID(index))
            names.append(name)
        return names
    finally:
        scene.RemoveNode(loaded)
        scene.RemoveNode(storage)


def ras_from_lps(point) -> list[float]:
    return [float(v) for v in (RAS_FROM_LPS[:3, :3] @ np.asarray(point, dtype=np.float64))]


def segment_mask(node, name: str, reference: Volume) -> np.ndarray:
    """The named segment as a boolean mask on ``reference``'s grid (resampled when needed)."""
    segmentation = node.GetSegmentation()
    identifier = segmentation.GetSegmentIdBySegmentName(name)
    if not identifier:
        raise KeyError(f"no segment named {name!r}")
    segment = segmentation.GetSegment(identifier)
    source = segment.GetRepresentation(BINARY_LABELMAP)
    target = _oriented_image(np.zeros(reference.array.shape, np.uint8), reference.ijk_to_lps)
    resampled = slicer.vtkOrientedImageData()
    slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(source, target, resampled)
    result = np.zeros(reference.array.shape, bool)
    extent = resampled.GetExtent()
    if extent[1] < extent[0]:
        return result
    values = _array(resampled) == segment.GetLabelValue()
    i0, j0, k0 = extent[0], extent[2], extent[4]
    k, j, i = values.shape
    result[k0:k0 + k, j0:j0 + j, i0:i0 + i] = values
    return result
