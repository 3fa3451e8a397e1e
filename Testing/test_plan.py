"""The model plan: one typed definition of preprocessing and inference, read and written the same
way by training and inference; the bundled packages' manifests load into it and write back unchanged."""
import json

import numpy as np
import pytest
import torch

from LungAutoSegLib.errors import InputError
from LungAutoSegLib.model_package import BUNDLED_MODELS, load_package
from LungAutoSegLib.plan import PADDINGS, Inference, ModelPlan, Postprocessing, Preprocessing


@pytest.mark.parametrize("version, edge_hu", [("1.0.0", None), ("2.1.0", -200.0)])
def test_the_bundled_manifests_load_into_the_plan_and_write_back_unchanged(version, edge_hu):
    folder = BUNDLED_MODELS / f"lungs-{version}"
    manifest = json.loads((folder / "manifest.json").read_text())
    plan = load_package(folder).plan
    assert plan == ModelPlan(Preprocessing((2.5, 2.5, 2.5), (-1000.0, 500.0)),
                             Inference(patch_size=(96, 96, 64), window=(208, 208, 160),
                                       postprocessing=Postprocessing(edge_hu=edge_hu)))
    assert plan.inference.patch_kji == (64, 96, 96)  # array order: k (S) first
    assert json.loads(json.dumps(plan.to_manifest())) == {k: manifest[k] for k in ("preprocessing", "inference")}


def test_settings_a_manifest_leaves_out_take_the_plans_defaults():
    inference = Inference.from_dict({"patch_size": [32, 32, 16], "postprocessing": {"fill_holes": False},
                                     "a_later_setting": 1}, factor=16)
    assert inference.window == (208, 208, 160) and inference.overlap == 0.25 and inference.padding == "replicate"
    assert inference.postprocessing == Postprocessing(largest_component=True, fill_holes=False)


@pytest.mark.parametrize("settings, message", [
    ({"patch_size": [96, 96, 40]}, "patch_size must be 3 positive multiples of 16"),
    ({"window": [208, 208]}, "window must be 3 positive multiples of 16"),
    ({"overlap": 1.0}, r"overlap must be in \[0, 1\)"),
    ({"padding": "edge"}, "padding must be one of replicate"),
    ({"postprocessing": {"smooth": True}}, "postprocessing must map largest_component, fill_holes"),
    ({"postprocessing": {"edge_hu": "-250"}}, "edge_hu to null or a HU value"),
    ({"postprocessing": {"edge_hu": 1500}}, "edge_hu to null or a HU value"),
    ({"postprocessing": {"edge_hu": True}}, "edge_hu to null or a HU value"),
    ({"postprocessing": {"pieces_ml": {"Esophagus": 0}}}, r"pieces_ml \(ml\) and bridge_mm \(mm\) to structure names"),
    ({"postprocessing": {"pieces_ml": ["Esophagus"]}}, r"pieces_ml \(ml\) and bridge_mm"),
    ({"postprocessing": {"bridge_mm": {"SpinalCord": -5}}}, r"bridge_mm \(mm\) to structure names with positive"),
    ({"postprocessing": {"bridge_mm": {"SpinalCord": True}}}, r"bridge_mm \(mm\) to structure names with positive"),
])
def test_a_bad_inference_setting_is_refused_by_name(settings, message):
    with pytest.raises(InputError, match=message):
        Inference.from_dict(settings, factor=16)


def test_the_edge_setting_is_written_only_when_set_and_reads_back():
    edged = Inference(postprocessing=Postprocessing(edge_hu=-250.0))
    assert edged.to_dict()["postprocessing"] == {"largest_component": True, "fill_holes": True, "edge_hu": -250.0}
    assert Inference.from_dict(json.loads(json.dumps(edged.to_dict())), factor=16) == edged
    assert "edge_hu" not in Inference().to_dict()["postprocessing"]  # older manifests write back unchanged
    assert Inference.from_dict({"postprocessing": {"edge_hu": -300}}, factor=16).postprocessing.edge_hu == -300.0


@pytest.mark.parametrize("padding", PADDINGS)
def test_training_pads_its_patches_as_inference_pads_its_windows(padding):
    """The NumPy name training's transforms use means what the torch name of the manifest means."""
    image = np.random.default_rng(0).random((5, 6, 7), dtype=np.float32)
    pad = [(2, 3), (1, 2), (3, 1)]  # (k, j, i), before and after
    by_torch = torch.nn.functional.pad(torch.from_numpy(image)[None, None], [n for p in pad[::-1] for n in p],
                                       mode=padding)[0, 0].numpy()
    by_numpy = np.pad(image, pad, mode=Inference(padding=padding).numpy_padding)
    assert np.array_equal(by_torch, by_numpy)


def test_kept_pieces_are_written_only_when_set_and_read_back():
    tubes = Inference(postprocessing=Postprocessing(pieces_ml={"Esophagus": 1.0, "SpinalCord": 1.0}))
    assert tubes.to_dict()["postprocessing"]["pieces_ml"] == {"Esophagus": 1.0, "SpinalCord": 1.0}
    assert Inference.from_dict(json.loads(json.dumps(tubes.to_dict())), factor=16) == tubes
    assert "pieces_ml" not in Inference().to_dict()["postprocessing"]
    assert tubes.postprocessing.min_piece_voxels("Esophagus", 1.5 * 1.5 * 2.5) == 178  # 1 ml of 5.625 mm3 voxels
    assert tubes.postprocessing.min_piece_voxels("Heart", 5.625) is None


def test_bridged_gaps_are_written_only_when_set_and_read_back():
    tubes = Inference(postprocessing=Postprocessing(bridge_mm={"Esophagus": 100.0}))
    assert tubes.to_dict()["postprocessing"]["bridge_mm"] == {"Esophagus": 100.0}
    assert Inference.from_dict(json.loads(json.dumps(tubes.to_dict())), factor=16) == tubes
    assert "bridge_mm" not in Inference().to_dict()["postprocessing"]
