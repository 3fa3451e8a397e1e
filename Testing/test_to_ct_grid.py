"""From the model grid's output to the CT's grid: postprocessing and the way back."""
import numpy as np
import pytest
import torch

from conftest import GEOMETRIES, dice, make_phantom
from LungAutoSegLib.plan import Postprocessing, Preprocessing
from LungAutoSegLib.postprocess import probabilities_to_masks
from LungAutoSegLib.preprocess import image_to_model, labels_to_model, resample
from LungAutoSegLib.to_ct_grid import keep_largest_components, label_map


SETTINGS = Preprocessing(spacing=(4.0, 4.0, 4.0))


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_masks_come_back_onto_the_ct_grid_on_the_right(geometry):
    phantom = make_phantom(1, geometry)
    _, grid = image_to_model(phantom.ct, SETTINGS)
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    on_model = labels_to_model(phantom.ct.with_array(labels), grid)
    back = label_map(np.stack([on_model == 1, on_model == 2]), grid, phantom.ct)
    assert dice(back == 1, phantom.masks["Lung_R"]) > 0.95
    assert dice(back == 2, phantom.masks["Lung_L"]) > 0.95
    assert phantom.ct.centroid_lps(back == 1)[0] < -40 < 40 < phantom.ct.centroid_lps(back == 2)[0]


def test_postprocessing_keeps_the_largest_component_and_fills_holes():
    winner = np.zeros((20, 20, 20), np.int64)
    winner[2:12, 2:12, 2:12] = 1
    winner[6, 6, 6] = 0                      # a hole
    winner[15:17, 15:17, 15:17] = 1          # a stray island
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(winner), 2).permute(3, 0, 1, 2).float()
    mask = probabilities_to_masks(probabilities)[0]
    assert mask.sum() == 1000 and mask[6, 6, 6] and not mask[16, 16, 16]


@pytest.mark.parametrize("geometry", ["oblique", "x_flipped"])
def test_masks_resampled_only_where_they_reach_equal_masks_resampled_everywhere(geometry):
    phantom = make_phantom(2, geometry)
    _, grid = image_to_model(phantom.ct, SETTINGS)
    masks = np.stack([labels_to_model(phantom.ct.with_array(phantom.masks[name].astype(np.uint8)), grid) > 0
                      for name in ("Lung_R", "Lung_L")])
    everywhere = np.stack([resample(grid.with_array(m.astype(np.float32)), phantom.ct) for m in masks])
    expected = np.where(everywhere.max(axis=0) > 0.5, everywhere.argmax(axis=0) + 1, 0)
    assert np.array_equal(label_map(masks, grid, phantom.ct), expected)


def test_specks_left_by_interpolation_are_removed_on_the_ct_grid():
    labels = np.zeros((30, 40, 50), np.uint8)
    labels[5:20, 5:20, 5:20] = 1
    labels[25, 35, 45] = 1                   # a speck of structure 1
    labels[5:20, 25:35, 5:20] = 2
    labels[2, 30, 2] = 2                     # a speck of structure 2
    tidy = keep_largest_components(labels.copy(), 2)
    assert (tidy == 1).sum() == 15 ** 3 and (tidy == 2).sum() == 15 * 10 * 15
    assert tidy[25, 35, 45] == 0 and tidy[2, 30, 2] == 0
    assert np.array_equal(keep_largest_components(labels.copy(), 2, Postprocessing(largest_component=False)), labels)
