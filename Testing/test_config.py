"""Training configuration: paths, overrides, refusals by name."""
import pytest

from LungAutoSegLib.errors import InputError
from lungautoseg_train.config import load_config


def write_yaml(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_paths_are_relative_to_the_file_and_overrides_apply(tmp_path):
    config = load_config(write_yaml(tmp_path, "data: {csv: data/dataset.csv}\nepochs: 7\n"),
                         ["optimizer.lr=3e-4", "network.channels=[8, 16, 32, 64, 128]", "data.fold=null"])
    assert config["data"]["csv"] == str(tmp_path / "data" / "dataset.csv")
    assert config["epochs"] == 7 and config["optimizer"]["lr"] == 3e-4 and config["data"]["fold"] is None
    assert config["network"]["channels"] == [8, 16, 32, 64, 128] and config["network"]["num_res_units"] == 2


@pytest.mark.parametrize("text, message", [
    ("data: {csv: d.csv}\nepoch: 5\n", "unknown config key 'epoch'"),
    ("data: {csv: d.csv, folds: 2}\n", "unknown config key data.'folds'"),
    ("data: {csv: d.csv}\npatch_size: [96, 96, 40]\n", "multiples of 16"),
    ("epochs: 5\n", "data.csv is required"),
    ("data: {csv: d.csv}\nloss: focal\n", "unknown loss"),
    ("data: [1, 2\n", "not valid YAML"),
])
def test_a_bad_config_is_refused_by_name(tmp_path, text, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[")):
        load_config(write_yaml(tmp_path, text))
