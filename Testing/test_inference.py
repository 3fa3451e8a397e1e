"""The inference core's pieces: preprocessing geometry, the way back to the CT grid, model packages."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import GEOMETRIES, dice, make_phantom
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.inference import predict_probabilities, probabilities_to_masks, tidy_on_ct, window_size
from LungAutoSegLib.model_package import load_package, write_package
from LungAutoSegLib.networks import build_network
from LungAutoSegLib.preprocess import (Preprocessing, image_to_model, labels_to_model, masks_to_ct, model_grid,
                                      resample)

SETTINGS = Preprocessing(spacing=(4.0, 4.0, 4.0))
TINY = {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}


def test_model_grid_is_axis_aligned_and_covers_the_ct():
    ct = make_phantom(0, "oblique").ct
    grid = model_grid(ct, (4.0, 4.0, 4.0))
    assert np.allclose(grid.direction, np.eye(3)) and np.allclose(grid.spacing, 4.0)
    ni, nj, nk = ct.shape_ijk
    corners = np.array([[i, j, k, 1] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)]) @ ct.ijk_to_lps.T
    inside = grid.lps_to_ijk(corners[:, :3])
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


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_masks_come_back_onto_the_ct_grid_on_the_right(geometry):
    phantom = make_phantom(1, geometry)
    _, grid = image_to_model(phantom.ct, SETTINGS)
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    on_model = labels_to_model(phantom.ct.with_array(labels), grid)
    back = masks_to_ct(np.stack([on_model == 1, on_model == 2]), grid, phantom.ct)
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
    assert np.array_equal(masks_to_ct(masks, grid, phantom.ct), expected)


def test_specks_left_by_interpolation_are_removed_on_the_ct_grid():
    labels = np.zeros((30, 40, 50), np.uint8)
    labels[5:20, 5:20, 5:20] = 1
    labels[25, 35, 45] = 1                   # a speck of structure 1
    labels[5:20, 25:35, 5:20] = 2
    labels[2, 30, 2] = 2                     # a speck of structure 2
    tidy = tidy_on_ct(labels.copy(), 2)
    assert (tidy == 1).sum() == 15 ** 3 and (tidy == 2).sum() == 15 * 10 * 15
    assert tidy[25, 35, 45] == 0 and tidy[2, 30, 2] == 0
    assert np.array_equal(tidy_on_ct(labels.copy(), 2, {"largest_component": False}), labels)


def test_the_window_is_the_whole_image_up_to_the_largest_and_the_training_patch_for_a_slab():
    patch, largest = [96, 96, 64], [208, 208, 160]   # (i, j, k); shapes and windows are (k, j, i)
    assert window_size((122, 129, 129), patch, largest, 16) == (128, 144, 144)  # one window
    assert window_size((300, 250, 230), patch, largest, 16) == (160, 208, 208)  # sliding
    assert window_size((6, 140, 140), patch, largest, 16) == (64, 96, 96)       # a thin slab


def _randomised(network):
    """Random weights and batch-norm statistics, so every layer changes the output."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in network.state_dict().items():
            if tensor.is_floating_point():  # variances positive
                low, width = (0.75, 0.5) if "running_var" in name else (-0.2, 0.4)
                tensor.copy_(low + width * torch.rand(tensor.shape, generator=generator))
    return network.eval()


@pytest.mark.parametrize("spec", [
    {"class": "UNet", "channels": [8, 16, 32, 64, 128], "strides": [2, 2, 2, 2], "num_res_units": 2, "norm": "batch"},
    {"class": "UNet", "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"},
    {"class": "UNet", "channels": [4, 8, 16, 16], "strides": [2, 1, 2], "num_res_units": 1, "norm": "batch"},
])
def test_the_inference_unet_is_monais_unet_without_monai(spec):
    monai_unet = _randomised(build_network(spec, out_channels=3))
    ours = build_network(spec, out_channels=3, for_inference=True)
    assert type(ours).__module__ == "LungAutoSegLib.torch_unet"
    ours.load_state_dict(monai_unet.state_dict(), strict=True)  # same parameter names and shapes
    x = torch.rand(1, 1, 32, 48, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        assert torch.allclose(ours.eval()(x), monai_unet(x), atol=1e-5)


def test_one_window_gives_what_monais_sliding_window_gives():
    from monai.inferers import sliding_window_inference

    network = _randomised(build_network(TINY, out_channels=2))
    image = np.random.default_rng(2).random((21, 30, 27), dtype=np.float32)  # (k, j, i)
    settings = {"patch_size": [16, 16, 16], "window": [64, 64, 64], "padding": "replicate"}
    ours = predict_probabilities(network, image, settings, "cpu", multiple=2)
    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(image)[None, None], (22, 30, 28), 1, network,
                                          overlap=0.25, mode="gaussian", padding_mode="replicate")
    assert ours.shape == (2, 21, 30, 27)
    assert torch.allclose(ours, torch.softmax(logits, dim=1)[0], atol=1e-5)


@pytest.fixture
def package(tmp_path):
    manifest = {"name": "tiny", "version": "0.0.1", "description": "test",
                "structures": [{"name": "Lung_R", "label": 1, "colour": [80, 160, 220]}],
                "network": TINY, "preprocessing": SETTINGS.to_dict(), "inference": {"patch_size": [32, 32, 32], "window": [32, 32, 32]}}
    network = build_network(TINY, out_channels=2)
    return write_package(tmp_path / "models", manifest, network.state_dict()), network


def test_a_package_loads_verified_and_gives_back_its_weights(package):
    folder, network = package
    loaded = load_package(folder)
    assert loaded.name == "tiny-0.0.1" and loaded.structure_names == ["Lung_R"]
    restored = loaded.load_network("cpu")
    for key, value in network.state_dict().items():
        assert torch.equal(restored.state_dict()[key], value)


def test_a_package_is_written_whole_or_not_at_all(package):
    folder, network = package
    with pytest.raises(InputError, match="exists already"):
        write_package(folder.parent, json.loads((folder / "manifest.json").read_text()), network.state_dict())


def test_a_zipped_package_loads_and_its_unpacked_copy_goes_with_the_process(package, tmp_path):
    folder, _ = package
    archive = shutil.make_archive(str(tmp_path / "tiny-0.0.1"), "zip", root_dir=folder.parent, base_dir=folder.name)
    assert load_package(archive).structure_names == ["Lung_R"]
    run = subprocess.run([sys.executable, "-c", "import sys; from LungAutoSegLib.model_package import load_package; "
                          "print(load_package(sys.argv[1]).root)", archive], capture_output=True, text=True, check=True)
    unpacked = Path(run.stdout.strip())
    assert unpacked.name == "tiny-0.0.1" and not unpacked.parent.exists()  # removed at exit


def _edit_manifest(folder, **changes):
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("damage, message", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:-8] + b"\0" * 8),
     "checksum mismatch"),
    (lambda f: (f / "model.safetensors").unlink(), "weights file that is missing"),
    (lambda f: _edit_manifest(f, schema_version=99), "unsupported manifest schema_version 99"),
    (lambda f: _edit_manifest(f, network={"class": "os.system"}), None),
    (lambda f: _edit_manifest(f, weights={"file": "../model.safetensors", "sha256": "0"}), "must lie in the package"),
    (lambda f: _edit_manifest(f, structures=[{"name": "Lung_R", "label": 2}]), "labels 1..n"),
    (lambda f: (f / "manifest.json").write_text("{not json"), "not valid JSON"),
])
def test_a_damaged_package_is_refused_with_the_reason(package, damage, message):
    folder, _ = package
    damage(folder)
    with pytest.raises(InputError) as error:
        load_package(folder).load_network("cpu")
    assert (message or "unknown network class 'os.system'") in str(error.value)


def test_a_zip_that_would_write_outside_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.writestr("../escaped.txt", "x")
    with pytest.raises(InputError, match="outside the package"):
        load_package(archive)
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("geometry", ["x_flipped", "oblique"])
def test_the_preview_shows_the_right_lung_on_the_pictures_left_in_axial_and_coronal(geometry):
    from LungAutoSegLib.overlay import overlay_panel

    phantom = make_phantom(4, geometry)
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    picture = overlay_panel(phantom.ct, phantom.ct.with_array(labels), [(255, 0, 0), (0, 0, 255)]).astype(int)
    red = (picture[..., 0] - picture[..., 2]) > 60   # Lung_R tinted red, Lung_L blue
    blue = (picture[..., 2] - picture[..., 0]) > 60
    width = model_grid(phantom.ct, (2.0, 2.0, 2.0)).shape_ijk[0]  # axial, then coronal, each `width` wide
    for view in (slice(0, width), slice(width + 4, 2 * width + 4)):
        columns_red, columns_blue = np.nonzero(red[:, view])[1], np.nonzero(blue[:, view])[1]
        assert len(columns_red) > 50 and len(columns_blue) > 50
        assert columns_red.mean() < width / 2 < columns_blue.mean()
