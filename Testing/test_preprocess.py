"""Preprocessing: the model grid, every orientation seen as axial, the fast axial path."""
import numpy as np
import pytest

from conftest import make_phantom
from LungAutoSegLib.plan import Preprocessing
from LungAutoSegLib.preprocess import image_to_model, labels_to_model, model_grid


SETTINGS = Preprocessing(spacing=(4.0, 4.0, 4.0))


def test_model_grid_is_axis_aligned_and_covers_the_ct():
    ct = make_phantom(0, "oblique").ct
    grid = model_grid(ct, (4.0, 4.0, 4.0))
    assert np.allclose(grid.direction, np.eye(3)) and np.allclose(grid.spacing, 4.0)
    ni, nj, nk = ct.shape_ijk
    corners = np.array([[i, j, k, 1] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]) @ ct.ijk_to_lps.T
    inside = grid.to_ijk(corners[:, :3])
    assert inside.min() >= -0.5 and np.all(inside.max(axis=0) <= np.array(grid.shape_ijk) - 0.5)


@pytest.mark.parametrize("geometry", ["x_flipped", "oblique", "descending"])
def test_every_orientation_gives_the_network_the_same_view_as_axial(geometry):
    axial, _ = image_to_model(make_phantom(3, "square_axial").ct, SETTINGS)
    other_phantom = make_phantom(3, geometry)
    other, grid = image_to_model(other_phantom.ct, SETTINGS)
    labels = labels_to_model(other_phantom.ct.with_array(other_phantom.masks["Lung_R"].astype(np.uint8)), grid)
    right_i = np.argwhere(labels > 0)[:, 2].mean()
    assert right_i < labels.shape[2] / 2  # low i is the patient's right on every model grid
    if geometry == "x_flipped":  # the same anatomy on a mirrored grid: the same network input
        assert other.shape == axial.shape and np.abs(other - axial).mean() < 0.01


@pytest.mark.parametrize("geometry", ["square_axial", "x_flipped", "descending", "nonsquare_unequal", "oblique"])
def test_the_fast_axial_path_gives_what_simpleitk_gives(geometry):
    from LungAutoSegLib.preprocess import _axis_matrices, _smoothed_resampled

    ct = make_phantom(1, geometry).ct
    settings = Preprocessing(spacing=(2.5, 2.5, 2.5))
    image, grid = image_to_model(ct, settings)
    hu = _smoothed_resampled(ct, grid, settings.spacing)
    low, high = settings.hu_window
    assert (_axis_matrices(ct, grid, settings.spacing) is None) == (geometry == "oblique")
    assert np.abs(image - (np.clip(hu, low, high) - low) / (high - low)).max() < 1e-5  # 0.015 HU


@pytest.mark.parametrize("geometry", ["square_axial", "x_flipped", "descending", "nonsquare_unequal"])
def test_the_way_back_to_an_axial_ct_gives_what_simpleitk_gives(geometry):
    """A mask on the model grid sampled back onto the CT's grid, axis by axis, is SimpleITK's
    linear resampling up to double rounding (1e-15), so thresholded it is the same voxels; and
    outside the model grid the default value."""
    import SimpleITK as sitk

    from LungAutoSegLib.image_io import volume_to_sitk
    from LungAutoSegLib.preprocess import _reference, resample

    phantom = make_phantom(1, geometry)
    _, grid = image_to_model(phantom.ct, Preprocessing(spacing=(2.5, 3.0, 3.5)))
    mask = labels_to_model(phantom.ct.with_array(phantom.masks["Lung_R"].astype(np.uint8)), grid)
    on_model = grid.with_array(mask.astype(np.float32))
    larger = phantom.ct.block([-3, -2, -1], [n + 4 for n in phantom.ct.array.shape])  # reaches past the model grid
    for target in (phantom.ct, larger):
        by_axes = resample(on_model, target, default=-7.0)
        by_itk = sitk.GetArrayFromImage(sitk.Resample(volume_to_sitk(on_model), _reference(target), sitk.Transform(),
                                                      sitk.sitkLinear, -7.0, sitk.sitkFloat32))
        assert by_axes.dtype == np.float32 and np.abs(by_axes - by_itk).max() < 1e-12
        assert np.array_equal(by_axes > 0.5, by_itk > 0.5)
    assert (by_axes == -7.0).any() and ((by_axes > 0) & (by_axes < 1)).any()
