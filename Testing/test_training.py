"""Training end to end on phantoms: it learns, resumes exactly, runs DDP, logs to W&B offline,
packages, and the evaluation cannot be fooled by a left-right flip."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import thorax_phantom as tp
from conftest import dice
from wandb_records import items, records, run_file
from LungAutoSegLib.errors import InputError
from LungAutoSegLib.image_io import read_volume, write_volume
from LungAutoSegLib.inference import predict
from LungAutoSegLib.model_package import load_package
from LungAutoSegLib.networks import build_network
from lungautoseg_train.cli import main as train_cli
from lungautoseg_train.checkpoints import load_checkpoint
from lungautoseg_train.config import load_config, model_plan
from lungautoseg_train.train import train

PHANTOM_GRID = dict(shape_ijk=(96, 96, 40), spacing=(3.8, 3.8, 6.0))
TINY_UNET = {"class": "UNet", "channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 1, "norm": "batch"}


def write_config(folder: Path, csv: Path, **settings) -> Path:
    config = {"output_dir": "run", "data": {"csv": str(csv), "fold": 0},
              "preprocessing": {"spacing": [6, 6, 6]}, "patch_size": [64, 64, 48], "network": TINY_UNET,
              "optimizer": {"lr": 0.003}, "validation": {"interval": 5, "images_every": 2, "image_cases": 2},
              "deterministic": True, **settings}
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """16 phantoms (4 folds), 25 epochs at 6 mm with W&B offline: about 1.5 minutes on 2 cores."""
    folder = tmp_path_factory.mktemp("training")
    csv = tp.write_nifti_dataset(folder / "data", range(16), folds=4, **PHANTOM_GRID)
    config = load_config(write_config(folder, csv, epochs=25))
    summary = train(config, wandb_mode="offline", progress=False)
    return Path(config["output_dir"]), summary, csv


def history(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "history.jsonl").read_text().splitlines()]


def test_a_short_cpu_run_on_phantoms_learns_the_right_lung(trained):
    output, summary, _ = trained
    validations = [h for h in history(output) if "val/dice_Lung_R" in h]
    assert len(validations) == 5  # every 5th epoch, the metric recomputed each time
    assert validations[-1]["val/dice_Lung_R"] >= 0.90
    assert validations[0]["val/dice_Lung_R"] < validations[-1]["val/dice_Lung_R"]
    assert summary["best_mean_dice"] == max(v["val/mean_dice"] for v in validations)


def test_the_package_infers_exactly_as_the_checkpoint(trained):
    output, summary, _ = trained
    package = load_package(summary["package"])
    state = load_checkpoint(output / "checkpoints" / "best.pt")
    assert package.plan == model_plan(state["config"])  # what training validated with is what inference runs
    network = build_network(state["config"]["network"], out_channels=3)
    network.load_state_dict(state["model"])
    phantom = tp.render(tp.make_anatomy(77), tp.make_grid(orientation="oblique", **PHANTOM_GRID))
    from_package = predict(phantom.ct, package, device="cpu")
    from_checkpoint = predict(phantom.ct, package, device="cpu", network=network.eval())
    assert np.array_equal(from_package.labels.array, from_checkpoint.labels.array)
    right = from_package.labels.array == 1
    assert dice(right, phantom.masks["Lung_R"]) > 0.85
    assert from_package.labels.centroid_lps(right)[0] < -40  # patient right is -x in LPS


def test_wandb_offline_run_holds_config_curves_images_table_and_model(trained):
    output, summary, csv = trained
    logged = records(run_file(output))
    run = next(r.run for r in logged if r.WhichOneof("record_type") == "run")
    config = items(run.config.update)
    assert config["data"]["csv"] == str(csv) and config["network"]["class"] == "UNet" and config["epochs"] == 25
    updates = {k: v for r in logged if r.WhichOneof("record_type") == "config" for k, v in items(r.config.update).items()}
    provenance = updates["provenance"]
    assert len(provenance["git_commit"]) == 40 and provenance["packages"]["monai"] == "1.6.1"
    import hashlib
    assert provenance["dataset_csv_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()

    rows = [items(r.history.item) for r in logged if r.WhichOneof("record_type") == "history"]
    steps = [r for r in rows if "train/loss" in r and "train/lr" in r]
    assert len({r["_step"] for r in steps}) == summary["steps"]  # loss and LR at every step
    epochs = [r for r in rows if "val/dice_Lung_R" in r]
    assert len(epochs) == 5 and all(r["train/samples_per_second"] > 0 for r in epochs)
    assert all(0 <= r["train/dice_loss_Lung_R"] <= 1 and 0 <= r["train/dice_loss_Lung_L"] <= 1 for r in epochs)
    assert all("train/seconds_per_epoch" in r for r in rows if "train/epoch_loss" in r)
    overlays = [r["val/overlays/count"] for r in rows if "val/overlays/count" in r]
    assert overlays and overlays[0] == 2
    media = list(run_file(output).parent.glob("files/media/images/val/*.png"))
    assert len(media) >= 2

    artifacts = [r.artifact for r in logged if r.WhichOneof("record_type") == "artifact"]
    model = next(a for a in artifacts if a.type == "model")
    assert set(model.aliases) >= {"best", "latest"}
    manifest = json.loads((Path(summary["package"]) / "manifest.json").read_text())
    assert json.loads(model.metadata) == manifest
    for entry in model.manifest.contents:  # referenced in place inside the run's output folder
        assert Path(entry.local_path).is_file() and Path(entry.local_path).is_relative_to(output)
    table = next(a for a in artifacts if a.type == "run_table")
    table_file = next(e for e in table.manifest.contents if e.path.endswith(".table.json"))
    content = json.loads(Path(table_file.local_path).read_text())
    assert content["columns"] == ["case", "structure", "dice", "hd95_mm", "msd_mm", "surface_dice_2mm",
                                  "volume_error_pct", "overlay"]
    assert len(content["data"]) == 4 * 2  # fold 0 holds 4 phantoms, two structures each
    assert Path(table_file.local_path).is_relative_to(output)


def test_evaluate_is_not_fooled_by_a_left_right_flip(trained, tmp_path):
    output, summary, _ = trained
    phantom = tp.render(tp.make_anatomy(55), tp.make_grid(**PHANTOM_GRID))
    labels = np.zeros(phantom.ct.array.shape, np.uint8)
    labels[phantom.masks["Lung_R"]], labels[phantom.masks["Lung_L"]] = 1, 2
    (tmp_path / "images").mkdir(), (tmp_path / "labels").mkdir()
    only_right = np.where(labels == 1, 1, 0).astype(np.uint8)  # a clinic that did not contour Lung_L
    cases = (("true", labels, "Lung_R Lung_L"), ("flipped", labels[:, :, ::-1].copy(), "Lung_R Lung_L"),
             ("partial", only_right, "Lung_R"))
    for name, label, _ in cases:
        write_volume(phantom.ct, tmp_path / f"images/{name}.nii.gz")
        write_volume(phantom.ct.with_array(label), tmp_path / f"labels/{name}.nii.gz")
    (tmp_path / "dataset.csv").write_text("case,patient,image,label,fold,labelled\n" + "".join(
        f"{n},{n},images/{n}.nii.gz,labels/{n}.nii.gz,0,{labelled}\n" for n, _, labelled in cases))
    code = train_cli(["evaluate", "--model", summary["package"], "--data", str(tmp_path / "dataset.csv"),
                      "--out", str(tmp_path / "evaluation"), "--wandb", "disabled", "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    score = {(r["case"], r["structure"]): r for r in result["cases"]}
    assert score["true", "Lung_R"]["dice"] >= 0.9
    assert score["flipped", "Lung_R"]["dice"] < 0.2
    assert score["true", "Lung_R"]["hd95_mm"] < score["flipped", "Lung_R"]["hd95_mm"]
    assert 0 < score["true", "Lung_R"]["surface_dice_2mm"] <= 1
    assert "use_subvoxels=True" in result["implementation"]
    assert score["partial", "Lung_R"]["dice"] >= 0.9 and ("partial", "Lung_L") not in score  # unlabelled: unscored
    csv_lines = (tmp_path / "evaluation" / "evaluation.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,structure,dice,hd95_mm") and len(csv_lines) == 6


def _losses(output: Path) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in history(output) if "loss" in h}


def test_a_killed_run_resumes_with_the_same_losses(tmp_path):
    csv = tp.write_nifti_dataset(tmp_path / "data", range(6), folds=3, **PHANTOM_GRID)
    settings = dict(epochs=8, validation={"interval": 100}, wandb={"mode": "disabled"})
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    whole = load_config(write_config(tmp_path / "a", csv, **settings))
    train(whole, progress=False)
    command = [sys.executable, "-m", "lungautoseg_train.cli", "train", "--quiet",
               "--config", str(write_config(tmp_path / "b", csv, **settings))]
    process = subprocess.Popen(command, start_new_session=True)
    last = tmp_path / "b" / "run" / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if last.is_file() and load_checkpoint(last)["epoch"] >= 2:
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.1)
    process.wait()
    killed = load_checkpoint(last)
    assert process.returncode == -signal.SIGKILL and 2 <= killed["epoch"] < 8
    assert not (tmp_path / "b" / "run" / "package").exists()
    partial = last.with_name(".last.pt.k1ll3d.pt")  # what a kill during a checkpoint write leaves
    partial.write_bytes(b"PK\x03\x04 half a checkpoint")
    assert subprocess.run(command + ["--resume"]).returncode == 0
    assert not partial.exists()
    expected, resumed = _losses(Path(whole["output_dir"])), _losses(tmp_path / "b" / "run")
    assert sorted(resumed) == sorted(expected)  # the killed epoch's partial history was dropped
    after = [step for step in expected if step > killed["step"]]
    assert after and [resumed[s] for s in after] == [expected[s] for s in after]


def test_two_process_torchrun_makes_one_checkpoint_and_one_wandb_run(tmp_path):
    csv = tp.write_nifti_dataset(tmp_path / "data", range(6), folds=3, **PHANTOM_GRID)
    config = write_config(tmp_path, csv, epochs=2, validation={"interval": 1, "images_every": 1})
    torchrun = Path(sys.executable).with_name("torchrun")
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "lungautoseg_train.cli",
                             "train", "--config", str(config), "--wandb", "offline", "--quiet"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "run"
    assert sorted(p.name for p in (output / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    assert len(list(output.glob("wandb/offline-run-*"))) == 1
    state = load_checkpoint(output / "checkpoints" / "last.pt")
    assert state["epoch"] == 2
    steps = [h for h in history(output) if "loss" in h]
    assert len(steps) == state["step"] == 2  # 4 training cases / 2 ranks / batch 2 = 1 step per epoch
    assert len([h for h in history(output) if "val/mean_dice" in h]) == 2  # written by rank 0 only


def test_checkpoints_load_without_running_pickled_code(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"model": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="not a readable"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_resume_needs_a_checkpoint_and_a_new_run_needs_an_empty_output(tmp_path):
    csv = tp.write_nifti_dataset(tmp_path / "data", range(2), folds=2, **PHANTOM_GRID)
    config = load_config(write_config(tmp_path, csv, epochs=1, wandb={"mode": "disabled"}))
    with pytest.raises(InputError, match="no checkpoint"):
        train(config, resume=True)
    (Path(config["output_dir"]) / "checkpoints").mkdir(parents=True)
    (Path(config["output_dir"]) / "checkpoints" / "last.pt").write_bytes(b"x")
    with pytest.raises(InputError, match="--resume"):
        train(config)
    assert read_volume(csv.parent / "labels" / "PHANTOM-000.nii.gz").array.max() == 2


def test_tune_edge_measures_the_ct_grid_edge_and_package_sets_the_chosen_value(trained, tmp_path):
    """On phantoms on a 1.9 mm grid the 6 mm model's boundary is coarse: tune-edge scores each
    edge_hu with the engine, the best beats the edge off, and ``package --set`` ships it."""
    output, summary, _ = trained
    csv = tp.write_nifti_dataset(tmp_path / "data", [60, 61], folds=1, shape_ijk=(192, 192, 24),
                                 spacing=(1.9, 1.9, 6.0))
    code = train_cli(["tune-edge", "--model", summary["package"], "--data", str(csv), "--candidates=-600,-300",
                      "--out", str(tmp_path / "edge.json"), "--device", "cpu", "--quiet"])
    assert code == 0
    result = json.loads((tmp_path / "edge.json").read_text())
    assert {(r["case"], r["edge_hu"]) for r in result["rows"]} == {
        (c, e) for c in result["cases"] for e in (None, -600.0, -300.0)} and len(result["cases"]) == 2
    means = result["mean_dice"]
    best = result["best_edge_hu"]
    assert best in (-600.0, -300.0) and means[str(best)] == max(means.values()) > means["None"] + 0.01

    code = train_cli(["package", "--checkpoint", str(output / "checkpoints" / "best.pt"), "--out",
                      str(tmp_path / "packages"), "--set", f"postprocessing.edge_hu={best}", "--set", "version=9.9.9"])
    assert code == 0
    package = load_package(tmp_path / "packages" / "lungs-9.9.9")
    assert package.plan.inference.postprocessing.edge_hu == best
    assert package.manifest["weights"]["sha256"] == load_package(summary["package"]).manifest["weights"]["sha256"]
    phantom = tp.render(tp.make_anatomy(60), tp.make_grid((192, 192, 24), (1.9, 1.9, 6.0)))
    edged = predict(phantom.ct, package, device="cpu").labels.array
    scored = next(r for r in result["rows"] if r["edge_hu"] == best and r["structure"] == "Lung_R"
                  and r["case"] == result["cases"][0])  # tune-edge's one network run scores what predict gives
    assert scored["dice"] == pytest.approx(dice(edged == 1, phantom.masks["Lung_R"]), abs=2e-4)
    plain = predict(phantom.ct, load_package(summary["package"]), device="cpu").labels.array
    assert dice(edged == 1, phantom.masks["Lung_R"]) > dice(plain == 1, phantom.masks["Lung_R"])


def test_package_refuses_to_change_what_the_weights_were_trained_for(trained, tmp_path, capsys):
    output, _, _ = trained
    code = train_cli(["package", "--checkpoint", str(output / "checkpoints" / "best.pt"), "--out", str(tmp_path),
                      "--set", "preprocessing.spacing=[2,2,2]"])
    assert code == 2 and "preprocessing.spacing cannot change after training" in capsys.readouterr().err
    code = train_cli(["package", "--checkpoint", str(output / "checkpoints" / "best.pt"), "--out", str(tmp_path),
                      "--set", "postprocessing.edge_hu=5000"])
    assert code == 2 and "edge_hu" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing written
