"""Two `lungautoseg segment` runs writing into one output folder at the same time."""
import fcntl
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import slicerio

from bad_inputs import patient
from LungAutoSegLib.image_io import read_volume


def start(ct: Path, output: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "LungAutoSegLib.cli", "segment", str(ct), "-o", str(output),
                             "--progress", "none", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outputs_agree(output: Path, name: str) -> list[str]:
    """The structures of one run's file set, after checking its files agree with each other."""
    report = json.loads((output / f"{name}_report.json").read_text())
    structures = list(report["structures"])
    labels = read_volume(output / f"{name}_labels.nii.gz").array
    assert sorted(int(v) for v in np.unique(labels) if v) == list(range(1, len(structures) + 1))
    segments = [s["name"] for s in slicerio.read_segmentation(str(output / f"{name}.seg.nrrd"),
                                                              skip_voxels=True)["segments"]]
    assert segments == structures
    return structures


def test_two_runs_on_different_cts_both_land_whole(tmp_path):
    cts = [patient(tmp_path / f"p{n}", seed=n)[1] for n in (0, 1)]
    for n, ct in enumerate(cts):  # distinct names in one folder
        ct.rename(ct.with_name(f"ct{n}"))
    runs = [start(ct.with_name(f"ct{n}"), tmp_path / "shared") for n, ct in enumerate(cts)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    for n in (0, 1):
        assert outputs_agree(tmp_path / "shared", f"ct{n}") == ["Lung_R", "Lung_L"]
    assert not list((tmp_path / "shared").glob(".lungautoseg-*"))  # no staging folder left


def test_two_overwriting_runs_on_one_ct_leave_one_runs_files_not_a_mix(tmp_path):
    _, ct = patient(tmp_path)
    runs = [start(ct, tmp_path / "shared", "--overwrite", "--structures", "Lung_R"),
            start(ct, tmp_path / "shared", "--overwrite", "--structures", "Lung_R,Lung_L")]
    assert [run.wait(timeout=300) for run in runs] == [0, 0], [run.stderr.read() for run in runs]
    assert outputs_agree(tmp_path / "shared", ct.name) in (["Lung_R"], ["Lung_R", "Lung_L"])


def test_of_two_runs_without_overwrite_the_second_to_finish_keeps_the_firsts_files(tmp_path):
    _, ct = patient(tmp_path)
    runs = [start(ct, tmp_path / "shared", "--structures", "Lung_R"),
            start(ct, tmp_path / "shared", "--structures", "Lung_R,Lung_L")]
    codes = sorted(run.wait(timeout=300) for run in runs)
    errors = "".join(run.stderr.read() for run in runs)
    assert codes == [0, 2] and "output exists already" in errors
    outputs_agree(tmp_path / "shared", ct.name)


def test_the_final_renames_wait_for_the_folders_lock(tmp_path):
    """While another holder has the folder's lock, a finished run keeps its files staged."""
    _, ct = patient(tmp_path)
    output = tmp_path / "shared"
    output.mkdir()
    with open(output / ".lungautoseg.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = start(ct, output)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not list(output.glob(".lungautoseg-*/*_report.json")):
            assert run.poll() is None, run.stderr.read()
            time.sleep(0.05)
        time.sleep(1.0)
        assert run.poll() is None  # all written, waiting
        assert sorted(p.name for p in output.iterdir() if not p.name.startswith(".")) == []
    assert run.wait(timeout=120) == 0, run.stderr.read()
    assert outputs_agree(output, ct.name) == ["Lung_R", "Lung_L"]
