"""Cascades: a later stage looks only inside its crop around what earlier stages found, in
millimetres of the patient, and its labels land on the CT's grid where that crop lies."""
import json
import shutil

import numpy as np
import pytest
import torch

from LungAutoSegLib.cascade import Crop, cropped
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.inference import predict
from LungAutoSegLib.model_package import BUNDLED_MODELS, CascadePackage, load_package, write_cascade, write_package
from LungAutoSegLib.networks import build_network
from LungAutoSegLib.plan import Inference, ModelPlan, Preprocessing
from LungAutoSegLib.structures import structure_entries
from LungAutoSegLib.volume import Volume, bounding_box

LUNGS = BUNDLED_MODELS / "lungs-2.1.0"
ALL = ["Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord"]
CROP = {"around": ["Lung_R", "Lung_L"], "margin_mm": [10.0, 20.0, None]}
TINY = {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}


def constant_stage(out, winner: int = 1):
    """A stage-2 package (Heart, Esophagus, SpinalCord) whose network says ``winner`` everywhere:
    zero weights, and an output bias that picks it. What it labels is exactly where it looks."""
    network = build_network(TINY, out_channels=4)
    state = {k: torch.zeros_like(v) if v.dtype.is_floating_point else v for k, v in network.state_dict().items()}
    bias = [k for k in state if k.endswith("bias")][-1]
    state[bias] = torch.nn.functional.one_hot(torch.tensor(winner), 4).float() * 5
    plan = ModelPlan(Preprocessing((3.0, 3.0, 3.0)), Inference(patch_size=(32, 32, 32), window=(256, 256, 256)))
    manifest = {"name": "constant", "version": "0.0.1", "description": "test stage",
                "structures": structure_entries(ALL[2:]), "network": TINY, **plan.to_manifest()}
    return write_package(out, manifest, state)


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    out = tmp_path_factory.mktemp("cascade")
    top = {"name": "cascade", "version": "0.0.1", "description": "test", "structures": structure_entries(ALL)}
    return write_cascade(out, top, [(LUNGS, None), (constant_stage(out), Crop.from_dict(CROP))])


def _grid(direction) -> Volume:
    return Volume.from_spacing(np.zeros((40, 50, 60), np.int16), (1.5, 2.0, 4.0), (10.0, -20.0, 5.0),
                               np.asarray(direction, float))


@pytest.mark.parametrize("direction", [np.eye(3), np.diag([-1.0, 1.0, -1.0]), [[0, 1, 0], [1, 0, 0], [0, 0, 1]]])
def test_the_crop_widens_the_box_by_millimetres_along_the_patient_axes(direction):
    ct = _grid(direction)
    found = np.zeros(ct.array.shape, bool)
    found[10:20, 15:30, 20:40] = True
    region = Crop.from_dict({"around": ["Lung_R"], "margin_mm": [6.0, 8.0, None]}).region(found, ct)
    part = cropped(ct, region)
    lps = np.array([ct.to_lps(c) for c in np.argwhere(found)[:, ::-1][[0, -1]]])
    corners = np.array([part.to_lps(c) for c in ([0, 0, 0], np.array(part.shape_ijk) - 1)])
    for axis, margin in ((0, 6.0), (1, 8.0)):  # L and P: the found box plus the margin, to the voxel
        want = (lps[:, axis].min() - margin, lps[:, axis].max() + margin)
        got = (corners[:, axis].min(), corners[:, axis].max())
        spacing = ct.spacing[np.abs(ct.direction[axis]).argmax()]
        assert want[0] - spacing < got[0] <= want[0] and want[1] <= got[1] < want[1] + spacing, (axis, want, got)
    whole = np.array([ct.to_lps(c) for c in ([0, 0, 0], np.array(ct.shape_ijk) - 1)])[:, 2]
    assert sorted(corners[:, 2]) == pytest.approx(sorted(whole))  # S: the whole scan
    assert np.array_equal(part.array, ct.array[region])
    assert Crop.from_dict(CROP).region(np.zeros(ct.array.shape, bool), ct) == tuple(slice(0, n) for n in ct.array.shape)


def test_the_later_stage_labels_exactly_its_crop_around_the_lungs_found_first(cascade):
    from LungAutoSegLib.cli import example_ct
    from LungAutoSegLib.ct_reader import read_ct

    package = load_package(cascade)
    assert isinstance(package, CascadePackage) and package.structure_names == ALL
    ct = read_ct(example_ct()).volume
    lungs_only = predict(ct, load_package(LUNGS), device="cpu").labels.array
    result = predict(ct, package, device="cpu")
    heart = result.labels.array == 3
    region = Crop.from_dict(CROP).region(lungs_only > 0, ct)
    box = bounding_box(heart)
    assert box == region  # every voxel of the crop, nothing outside it
    assert not (lungs_only[box] > 0).all() and (lungs_only > 0)[heart].any()
    outside = np.ones(ct.array.shape, bool)
    outside[region] = False
    assert np.array_equal(result.labels.array[outside], lungs_only[outside])  # stage 1's labels stand there
    claimed = {pair: n for pair, n in result.overlaps.items()}
    assert claimed == {("Heart", "Lung_R"): int((lungs_only == 1).sum()), ("Heart", "Lung_L"): int((lungs_only == 2).sum())}


def test_asking_for_the_lungs_alone_runs_the_first_stage_alone(cascade):
    from LungAutoSegLib.cli import example_ct
    from LungAutoSegLib.ct_reader import read_ct

    ct = read_ct(example_ct()).volume
    result = predict(ct, load_package(cascade), device="cpu", structures=["Lung_R"])
    assert set(np.unique(result.labels.array)) == {0, 1, 2}
    assert np.array_equal(result.labels.array, predict(ct, load_package(LUNGS), device="cpu").labels.array)


def _edit(folder, tmp_path, change):
    copy = tmp_path / "edited"
    shutil.copytree(folder, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest, copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


@pytest.mark.parametrize("change, message", [
    (lambda m, f: (f / "constant" / "model.safetensors").write_bytes(b"0" * 100), "checksum mismatch"),
    (lambda m, f: shutil.rmtree(f / "lungs"), "no manifest.json"),
    (lambda m, f: m["stages"][0].update(folder="../lungs"), "folder name inside the package"),
    (lambda m, f: m["stages"].reverse(), "which no earlier stage makes"),
    (lambda m, f: m["stages"][1]["crop"].update(margin_mm=[10, "x", None]), "margin_mm"),
    (lambda m, f: m["structures"].pop(), "each structure must come from one stage"),
    (lambda m, f: m["weights"].update(sha256="0" * 64), "a stage was altered or replaced"),
])
def test_a_damaged_cascade_is_refused_with_the_reason(cascade, tmp_path, change, message):
    with pytest.raises(InputError, match=message):
        load_package(_edit(cascade, tmp_path, change))
