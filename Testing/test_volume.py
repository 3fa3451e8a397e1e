import numpy as np

from LungAutoSegLib.volume import Volume, affine_from_itk
from thorax_phantom import ORIENTATIONS


def test_affine_maps_index_to_lps_and_back():
    direction = ORIENTATIONS["oblique"]
    volume = Volume(np.zeros((4, 5, 6)), affine_from_itk((0.7, 0.9, 2.5), (-10, 20, 30), direction))
    assert np.allclose(volume.spacing, (0.7, 0.9, 2.5))
    assert np.allclose(volume.direction, direction)
    ijk = np.array([[5, 4, 3], [0, 0, 0], [2.5, 1, 0.5]])
    lps = ijk @ volume.ijk_to_lps[:3, :3].T + volume.origin
    assert np.allclose(volume.to_ijk(lps), ijk) and np.allclose(volume.to_lps(ijk), lps)
    centres = volume.voxel_centres_lps()
    assert centres.shape == (4, 5, 6, 3)
    assert np.allclose(centres[3, 4, 5], lps[0])  # array[k, j, i] is voxel (i, j, k)


def test_centroid_is_in_millimetres():
    array = np.zeros((3, 4, 5), dtype=bool)
    array[1, 2, 3] = True  # k=1, j=2, i=3
    volume = Volume(array, affine_from_itk((2, 3, 4), (100, 0, -50), np.diag([-1, 1, -1])))
    assert np.allclose(volume.centroid_lps(array), [100 - 3 * 2, 2 * 3, -50 - 1 * 4])
