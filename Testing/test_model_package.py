"""Model packages: verified loading, whole writes, zips, refusals with the reason."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from LungAutoSegLib.errors import InputError
from LungAutoSegLib.model_package import load_package, write_package
from LungAutoSegLib.networks import build_network
from LungAutoSegLib.plan import Preprocessing


SETTINGS = Preprocessing(spacing=(4.0, 4.0, 4.0))


TINY = {"class": "UNet", "channels": [4, 8], "strides": [2], "num_res_units": 1, "norm": "batch"}


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
    (lambda f: (f / "manifest.json").write_text("[" * 100_000 + "]" * 100_000), "nested too deeply"),
    (lambda f: (f / "manifest.json").write_text(" " * (2 << 20) + "{}"), "larger than 1024 kB"),
    (lambda f: _edit_manifest(f, preprocessing={"spacing": [4, 4, 4], "hu_window": [float("nan"), 500]}),
     "NaN is not a number a manifest may hold"),
    (lambda f: _edit_manifest(f, preprocessing={"spacing": [4, 4, 4], "hu_window": [-1e308 * 10, 1e308 * 10]}),
     "-Infinity is not a number a manifest may hold"),
    (lambda f: _edit_manifest(f, preprocessing={"spacing": [4, 4, 4], "hu_window": [-1e6, 500]}),
     "hu_window must be [low, high] within -2000..5000 HU"),
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


def test_info_on_a_hostile_manifest_prints_one_line_and_exits_2(package, tmp_path):
    folder, _ = package
    (folder / "manifest.json").write_text('{"a":' * 100_000 + "1" + "}" * 100_000)
    done = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "info", str(folder)], capture_output=True,
                          text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "manifest" in done.stderr and str(folder) in done.stderr
