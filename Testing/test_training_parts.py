"""The training package's parts: config, augmentation that keeps right right, the cache, metrics, W&B mode."""
import json

import numpy as np
import pytest

import thorax_phantom as tp
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.preprocess import Preprocessing
from lungautoseg_train import tracking
from lungautoseg_train.config import load_config
from lungautoseg_train.data import label_values, prepare_case, read_dataset
from lungautoseg_train.metrics import structure_metrics
from lungautoseg_train.transforms import RandFlipLeftRightd, left_right_pairs, train_transform

GRID = dict(shape_ijk=(64, 64, 24), spacing=(5.5, 5.5, 10.0))


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


def _side_by_label(sample) -> tuple[float, float]:
    label = np.asarray(sample["label"])[0]
    return np.argwhere(label == 1)[:, 2].mean(), np.argwhere(label == 2)[:, 2].mean()


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_never_turns_a_right_lung_into_a_left_one(tmp_path, flip):
    csv = tp.write_nifti_dataset(tmp_path, [4], folds=1, **GRID)
    case = prepare_case(read_dataset(csv)[0], Preprocessing((6.0, 6.0, 6.0)), [1, 2], tmp_path / "cache")
    config = load_config(None, [f"data.csv={csv}", "patch_size=[64, 64, 48]", "samples_per_case=1",
                                f"augmentation.flip_left_right={flip}", "augmentation.probability=1.0"])
    transform = train_transform(config)
    for seed in range(12):
        transform.set_random_state(seed=seed)
        sample = transform({"image": case.image[None], "label": case.label[None]})[0]
        right, left = _side_by_label(sample)
        assert right < left  # label 1 (Lung_R) stays at low i, the patient's right
    if flip:  # the flip really happens: the image is mirrored and the labels swapped with it
        flip_step = RandFlipLeftRightd(left_right_pairs(["Lung_R", "Lung_L"]), prob=1.0)
        mirrored = flip_step({"image": case.image[None], "label": case.label[None]})
        assert np.array_equal(mirrored["image"][0], case.image[:, :, ::-1])
        assert np.array_equal(mirrored["label"][0] == 1, case.label[:, :, ::-1] == 2)
    assert left_right_pairs(["Lung_R", "Lung_L", "Heart"]) == {1: 2, 2: 1}


def test_a_corrupt_cache_entry_is_rebuilt_not_trusted(tmp_path):
    csv = tp.write_nifti_dataset(tmp_path, [2], folds=1, **GRID)
    record, settings = read_dataset(csv)[0], Preprocessing((6.0, 6.0, 6.0))
    first = prepare_case(record, settings, [1, 2], tmp_path / "cache")
    (entry,) = (tmp_path / "cache").glob("*.npz")
    data = dict(np.load(entry))
    data["label"] = np.zeros_like(data["label"])  # damaged content, stale digest
    np.savez(entry, **data)
    again = prepare_case(record, settings, [1, 2], tmp_path / "cache")
    assert np.array_equal(again.label, first.label) and again.label.max() == 2
    entry.write_bytes(b"truncated")
    assert np.array_equal(prepare_case(record, settings, [1, 2], tmp_path / "cache").label, first.label)


def test_label_values_follow_the_export_report(tmp_path):
    assert label_values(tmp_path / "dataset.csv", ["Lung_R", "Lung_L"]) == [1, 2]
    (tmp_path / "export_report.json").write_text(json.dumps({"rois": ["Heart", "Lung_L", "Lung_R"]}))
    assert label_values(tmp_path / "dataset.csv", ["Lung_R", "Lung_L"]) == [3, 2]
    with pytest.raises(InputError, match="SpinalCord were not exported"):
        label_values(tmp_path / "dataset.csv", ["SpinalCord"])


def test_metrics_in_millimetres_on_an_anisotropic_grid():
    reference = np.zeros((30, 40, 40), bool)
    reference[5:25, 10:30, 10:30] = True
    shifted = np.roll(reference, 2, axis=2)  # 2 columns of 0.5 mm = 1 mm to the side
    spacing = (3.0, 0.5, 0.5)  # (k, j, i)
    same = structure_metrics(reference, reference, spacing)
    assert same["dice"] == 1 and same["hd95_mm"] == 0 and same["surface_dice_2mm"] == 1
    moved = structure_metrics(shifted, reference, spacing)
    assert moved["dice"] == pytest.approx(0.9) and moved["hd95_mm"] == pytest.approx(1.0)
    assert moved["surface_dice_2mm"] == pytest.approx(1.0)  # within the 2 mm tolerance
    assert moved["volume_ml"] == pytest.approx(20 * 20 * 20 * 0.75 / 1000)
    empty = structure_metrics(np.zeros_like(reference), reference, spacing)
    assert empty["dice"] == 0 and np.isnan(empty["hd95_mm"]) and empty["volume_error_pct"] == -100
    ignore = np.zeros_like(reference)
    ignore[:, :, 28:] = True  # the shifted part is not scored
    assert structure_metrics(shifted, reference, spacing, ignore)["dice"] > moved["dice"]


def test_wandb_is_offline_unless_an_account_is_configured(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    assert tracking.resolve_mode(None) == "offline"
    assert tracking.resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert tracking.resolve_mode(None) == "offline"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode(None) == "online"


def test_evaluate_selects_all_a_fold_or_a_named_split(tmp_path):
    from lungautoseg_train.evaluate import select

    (tmp_path / "dataset.csv").write_text("case,patient,image,label,fold,split\n"
                                          "a,a,i/a,l/a,0,train\nb,b,i/b,l/b,1,test\nc,c,i/c,l/c,1,\n")
    records = read_dataset(tmp_path / "dataset.csv")
    assert [r.case for r in select(records, "all")] == ["a", "b", "c"]
    assert [r.case for r in select(records, "1")] == ["b", "c"]
    assert [r.case for r in select(records, "test")] == ["b"]
    with pytest.raises(InputError, match="no cases in split 'validation'"):
        select(records, "validation")


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_checkpoint_whole(tmp_path):
    """The trainer's own writer, killed with SIGKILL while torch.save is writing a 400 MB state."""
    import signal
    import subprocess
    import sys
    import time

    import torch

    from lungautoseg_train.train import _save_checkpoint, load_checkpoint

    last = tmp_path / "last.pt"
    _save_checkpoint(last, {"epoch": 1, "model": {"w": torch.ones(3)}})
    writer = subprocess.Popen([sys.executable, "-c", "import sys, torch; from pathlib import Path; "
                               "from lungautoseg_train.train import _save_checkpoint; "
                               "_save_checkpoint(Path(sys.argv[1]), {'epoch': 2, 'model': {'w': torch.zeros(10**8)}})",
                               str(last)])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and writer.poll() is None:
        partial = [p for p in tmp_path.glob(".last.pt.*") if p.stat().st_size > 1_000_000]
        if partial:
            writer.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL and partial  # killed mid-write, a partial file on disk
    assert partial[0].stat().st_size < 4 * 10**8
    state = load_checkpoint(last)  # what --resume reads: the previous checkpoint, whole
    assert state["epoch"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
