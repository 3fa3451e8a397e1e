"""From the model grid's output to the CT's grid: postprocessing and the way back."""
import numpy as np
import pytest
import SimpleITK as sitk
import torch

import thorax_phantom as tp
from conftest import GEOMETRIES, dice, make_phantom
from LungAutoSegLib.plan import Postprocessing, Preprocessing
from LungAutoSegLib.postprocess import probabilities_to_masks
from LungAutoSegLib.preprocess import image_to_model, labels_to_model, resample
from LungAutoSegLib.to_ct_grid import AIR_HU, keep_largest_components, label_map


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
    mask = probabilities_to_masks(probabilities, ["Heart"], (1.0, 1.0, 1.0))[0]
    assert mask.sum() == 1000 and mask[6, 6, 6] and not mask[16, 16, 16]


def test_a_broken_tube_keeps_its_pieces_but_loses_its_specks():
    """An esophagus broken by the network stays two pieces where the plan says pieces_ml; a
    speck below that volume goes, and so does a piece beside the tube on its own slices (a tube
    crosses each slice once); a structure not named keeps only its largest piece."""
    winner = np.zeros((40, 12, 30), np.int64)
    winner[2:20, 4:8, 4:8] = 1               # lower esophagus: 288 voxels
    winner[26:38, 4:8, 4:8] = 1              # upper esophagus beyond a gap: 192 voxels
    winner[23, 10, 10] = 1                   # a speck
    winner[4:12, 4:8, 20:24] = 1             # beside the lower esophagus, 12 voxels away: 128 voxels
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(winner), 2).permute(3, 0, 1, 2).float()
    steps = Postprocessing(pieces_ml={"Esophagus": 0.1})  # 100 voxels of 1 mm3
    kept = probabilities_to_masks(probabilities, ["Esophagus"], (1.0, 1.0, 1.0), steps)[0]
    assert kept.sum() == 288 + 192 and kept[30, 5, 5] and not kept[23, 10, 10] and not kept[8, 5, 21]
    assert probabilities_to_masks(probabilities, ["Heart"], (1.0, 1.0, 1.0), steps)[0].sum() == 288
    on_ct = keep_largest_components(winner.astype(np.uint8), ["Esophagus"], 1.0, steps)
    assert (on_ct == 1).sum() == 288 + 192 and on_ct[23, 10, 10] == 0


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
    tidy = keep_largest_components(labels.copy(), ["Lung_R", "Lung_L"], 1.0)
    assert (tidy == 1).sum() == 15 ** 3 and (tidy == 2).sum() == 15 * 10 * 15
    assert tidy[25, 35, 45] == 0 and tidy[2, 30, 2] == 0
    assert np.array_equal(keep_largest_components(labels.copy(), ["Lung_R", "Lung_L"], 1.0,
                                                   Postprocessing(largest_component=False)), labels)


def _coarse_lungs(phantom, spacing_mm: float):
    """The phantom's true lungs as a model on a ``spacing_mm`` grid would see them."""
    _, grid = image_to_model(phantom.ct, Preprocessing(spacing=(spacing_mm,) * 3))
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    on_model = labels_to_model(phantom.ct.with_array(labels), grid)
    return np.stack([on_model == 1, on_model == 2]), grid


def test_the_edge_is_redrawn_where_the_ct_turns_to_tissue():
    """A 6 mm model grid cannot place a boundary the 1.8 mm CT draws: with ``edge_hu`` the
    undecided band follows the CT, and the lungs come back closer to the truth."""
    phantom = tp.render(tp.make_anatomy(3), tp.make_grid((192, 160, 16), (1.8, 1.8, 5.0)))
    masks, grid = _coarse_lungs(phantom, 6.0)
    plain = label_map(masks, grid, phantom.ct)
    edged = label_map(masks, grid, phantom.ct, edge_hu=-300.0)
    for value, name in ((1, "Lung_R"), (2, "Lung_L")):
        truth = phantom.masks[name]
        assert dice(edged == value, truth) > max(0.985, dice(plain == value, truth) + 0.01)
        k, j, _ = (int(round(c)) for c in np.argwhere(truth).mean(axis=0))
        lateral = 0 if name == "Lung_R" else -1  # patient right is low i
        ends = [np.nonzero(row)[0][lateral] for row in ((edged == value)[k, j], truth[k, j])]
        assert abs(ends[0] - ends[1]) <= 1  # the pleural edge on the lung's middle row, to 1.8 mm
    # That row of the right lung ends medially at the right main bronchus (air beside air):
    # there the model's boundary stands, the edge does not grow into the bronchus.
    k, j, _ = (int(round(c)) for c in np.argwhere(phantom.masks["Lung_R"]).mean(axis=0))
    medial = np.nonzero(plain[k, j] == 1)[0][-1]
    assert phantom.ct.array[k, j, medial + 1] < AIR_HU and np.nonzero(edged[k, j] == 1)[0][-1] == medial
    assert phantom.ct.centroid_lps(edged == 1)[0] < -40 < 40 < phantom.ct.centroid_lps(edged == 2)[0]


def test_the_edge_keeps_what_the_model_decided_and_the_vessels_at_the_pleura():
    """Dense voxels deep inside a lung (decided by the model) stay lung, and a vessel that
    the edge would notch out of a slice is filled back: experts include lung vessels."""
    phantom = tp.render(tp.make_anatomy(3), tp.make_grid((192, 160, 16), (1.8, 1.8, 5.0)))
    masks, grid = _coarse_lungs(phantom, 6.0)
    ct = phantom.ct.with_array(phantom.ct.array.copy())
    lung_r = phantom.masks["Lung_R"]
    k, j, i = (int(round(c)) for c in np.argwhere(lung_r).mean(axis=0))
    ct.array[k, j - 2:j + 3, i - 2:i + 3] = 40  # a dense nodule in the middle of the right lung
    inside = np.nonzero(lung_r[k, j])[0]
    rim = inside[2]  # a lung voxel near the lateral pleura, inside the edge band
    ct.array[k, j - 1:j + 2, rim - 1:rim + 2] = 40  # a vessel touching nothing but lung
    edged = label_map(masks, grid, ct, edge_hu=-300.0)
    assert (edged[k, j - 2:j + 3, i - 2:i + 3] == 1).all()
    assert (edged[k, j - 1:j + 2, rim - 1:rim + 2] == 1).all()


def test_slice_holes_are_what_a_fill_of_each_slice_finds():
    """The one-pass hole finder against SimpleITK's fill, slice by slice, on blobs with speckle:
    holes inside holes, holes touching the edge (not holes), empty slices."""
    from scipy import ndimage

    from LungAutoSegLib.to_ct_grid import slice_holes

    rng = np.random.default_rng(3)
    for _ in range(10):
        mask = (ndimage.gaussian_filter(rng.random((12, 50, 60)), 2) > 0.5) | (rng.random((12, 50, 60)) > 0.97)
        mask[5] = False
        expected = np.zeros_like(mask)
        for k in range(mask.shape[0]):
            image = sitk.GetImageFromArray(mask[k].astype(np.uint8))
            expected[k] = (sitk.GetArrayFromImage(sitk.BinaryFillhole(image, fullyConnected=False, foregroundValue=1))
                           > 0) & ~mask[k]
        assert expected.sum() > 0
        np.testing.assert_array_equal(slice_holes(mask), expected)


def test_a_tube_lost_for_a_stretch_is_bridged_along_its_drifting_course():
    """An esophagus (radius 4 voxels of 1 mm) drifting 10 mm sideways over 60 slices of 2.5 mm,
    lost by the network on slices 20-39 and thinned to a point on the slices either side: the
    bridge draws the missing slices at the course's true centre and calibre, and not onto
    another structure's voxels."""
    k, j, i = np.mgrid[:60, :40, :40]
    centre_i = 12 + k / 6.0                                 # drifts 10 voxels over the tube
    tube = (i - centre_i) ** 2 + (j - 20) ** 2 <= 16
    broken = tube & ((k < 18) | (k > 41))
    broken[18] = tube[18] & ((i[18] - 15) ** 2 + (j[18] - 20) ** 2 <= 1)   # thinned ends
    broken[41] = tube[41] & ((i[41] - 19) ** 2 + (j[41] - 20) ** 2 <= 1)
    heart = np.zeros_like(tube)
    heart[30, :, 19:] = True                                 # claims the tube's left half on one slice
    winner = np.where(heart, 2, np.where(broken, 1, 0))
    probabilities = torch.nn.functional.one_hot(torch.from_numpy(winner), 3).permute(3, 0, 1, 2).float()
    steps = Postprocessing(pieces_ml={"Esophagus": 0.01}, bridge_mm={"Esophagus": 60.0})
    esophagus, kept_heart = probabilities_to_masks(probabilities, ["Esophagus", "Heart"], (1.0, 1.0, 2.5), steps)
    gap = slice(18, 42)
    assert dice(esophagus[gap] & ~heart[gap], tube[gap] & ~heart[gap]) > 0.9
    for slice_k in (25, 35):
        assert abs(np.argwhere(esophagus[slice_k]).mean(axis=0)[1] - (12 + slice_k / 6)) < 0.5
    assert not (esophagus & heart).any() and np.array_equal(kept_heart, heart)
    too_short = Postprocessing(pieces_ml={"Esophagus": 0.01}, bridge_mm={"Esophagus": 40.0})  # 16 slices < 22 lost
    assert not probabilities_to_masks(probabilities, ["Esophagus", "Heart"], (1.0, 1.0, 2.5), too_short)[0][30].any()
