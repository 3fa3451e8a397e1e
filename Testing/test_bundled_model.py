"""The bundled lungs model (the thoracic package's first stage, and selectable on its own): verified on
load, small, honest card, and right on the patient's right."""
import json

import pytest

from conftest import GEOMETRIES, dice, make_phantom, shared_data
from LungAutoSegLib.ct_reader import read_ct
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.inference import predict
from LungAutoSegLib.model_package import bundled_package, load_package, sha256_of


@pytest.fixture(scope="module")
def package():
    return load_package(bundled_package().parent / "lungs-2.1.0")


def test_the_bundled_package_is_verified_small_and_described(package):
    assert package.name == "lungs-2.1.0"
    assert sha256_of(package.weights_path) == package.manifest["weights"]["sha256"]
    assert sum(p.stat().st_size for p in package.root.iterdir()) <= 20 * 1024 * 1024
    right = package.structures[0]
    assert right["name"] == "Lung_R" and right["label"] == 1
    assert right["snomed"]["type"][1] == "39607008" and right["snomed"]["modifier"][1] == "24028007"
    card = (package.root / "MODEL_CARD.md").read_text().lower()
    assert "not clinically validated" in card and "leave one expert patient out" in card
    assert "non-commercial" in card and "cc by-nc 3.0" in card  # weights derived from NSCLC-Radiomics
    assert "known failure modes" in card


def test_the_default_offers_the_most_structures_then_the_newest_by_version_number(tmp_path):
    for version in ("9.0.0", "10.0.0", "2.1.0"):
        (tmp_path / f"lungs-{version}").mkdir()
        (tmp_path / f"lungs-{version}" / "manifest.json").write_text(
            json.dumps({"version": version, "structures": [{"name": "Lung_R"}, {"name": "Lung_L"}]}))
    (tmp_path / "notes").mkdir()  # not a package: no manifest
    assert bundled_package(tmp_path).name == "lungs-10.0.0"  # by number: as text, 9.0.0 would win
    (tmp_path / "thorax-1.0.0").mkdir()
    (tmp_path / "thorax-1.0.0" / "manifest.json").write_text(json.dumps({"version": "1.0.0", "structures": [{}] * 5}))
    assert bundled_package(tmp_path).name == "thorax-1.0.0"
    (tmp_path / "lungs-9.0.0" / "manifest.json").write_text("{ not json")
    with pytest.raises(InputError, match="unreadable model manifest") as raised:
        bundled_package(tmp_path)
    assert "lungs-9.0.0" in str(raised.value)


def test_the_previous_model_stays_importable_and_runs():
    old = load_package(bundled_package().parent / "lungs-1.0.0")
    assert old.manifest["version"] == "1.0.0"
    phantom = make_phantom(21, "square_axial")
    assert dice(predict(phantom.ct, old, device="cpu").labels.array == 1, phantom.masks["Lung_R"]) >= 0.9


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_on_phantoms_in_every_orientation_lung_r_is_found_on_the_right(package, geometry):
    phantom = make_phantom(21, geometry)
    result = predict(phantom.ct, package, device="cpu")
    right = result.labels.array == 1
    assert dice(right, phantom.masks["Lung_R"]) >= 0.9
    assert dice(result.labels.array == 2, phantom.masks["Lung_L"]) >= 0.9
    assert result.labels.centroid_lps(right)[0] < -40  # patient right is -x in LPS


def test_on_a_real_ct_the_lungs_match_the_reference(package):
    folder = shared_data("reference", "pyrad_lung2")
    ct = read_ct(shared_data(json.loads((folder / "case.json").read_text())["ct"])).volume
    result = predict(ct, package, device="cpu", with_probabilities=True)
    reference = read_volume(folder / "lung_r.nrrd").array > 0
    ignore = read_volume(folder / "ignore.nrrd").array > 0
    assert result.labels.array.shape == ct.array.shape
    assert dice((result.labels.array == 1) & ~ignore, reference & ~ignore) >= 0.9  # a training case: a sanity check
    assert result.probabilities.shape == (2, *ct.array.shape)
    right_probability = result.probabilities[0]
    assert right_probability[result.labels.array == 1].mean() > 0.8
    assert right_probability[result.labels.array == 2].mean() < 0.1
