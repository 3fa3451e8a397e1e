"""Batch runs: ``lungautoseg segment A B C`` and ``--batch ROOT``, the model loaded once."""
from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest

from node_harness import EXAMPLE, example_series
from LungAutoSegLib.batch import Case, find_cases, safe_part, shard
from LungAutoSegLib.errors import InputError


def run(*args):
    return subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def summary(folder):
    with open(folder / "summary.csv", newline="", encoding="utf-8") as file:
        return {row["case"]: row for row in csv.DictReader(file)}


def test_a_batch_with_a_bad_case_contours_the_others_says_so_and_a_rerun_does_no_work_again(tmp_path):
    root = tmp_path / "cohort"
    series_uid = example_series(root / "dicom" / "any-folder-name", "PAT/1")  # a "/" in a patient ID
    (root / "volumes").mkdir()
    shutil.copy(EXAMPLE, root / "volumes" / "example.nrrd")
    (root / "volumes" / "broken.nrrd").write_text("not a volume")
    out = tmp_path / "out"

    first = run("segment", "--batch", root, "-o", out, "--progress", "none", "--device", "cpu")
    assert first.returncode == 1, first.stderr
    rows = summary(out)
    dicom_key = f"{safe_part('PAT/1', '')}/{series_uid}"
    assert {k: r["status"] for k, r in rows.items()} == {
        dicom_key: "done", "volumes/example.nrrd": "done", "volumes/broken.nrrd": "refused"}
    assert "broken.nrrd" in rows["volumes/broken.nrrd"]["warnings"]
    for key in (dicom_key, "volumes/example.nrrd"):
        assert "Lung_R" in rows[key]["volumes"] and float(rows[key]["seconds"]) > 0
    assert len(list((out / dicom_key).glob("*.dcm"))) == 1  # the RTSTRUCT of the DICOM case
    written = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "summary.csv"}

    again = run("segment", "--batch", root, "-o", out, "--progress", "none", "--device", "cpu")
    assert again.returncode == 1 and "2 done earlier" in again.stdout
    assert {k: r["status"] for k, r in summary(out).items()}[dicom_key] == "done earlier"
    assert {p: p.stat().st_mtime_ns for p in written} == written  # nothing contoured again


def test_several_inputs_name_the_cases_and_all_done_exits_zero(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "a.nrrd")
    shutil.copy(EXAMPLE, tmp_path / "b.nrrd")
    done = run("segment", tmp_path / "a.nrrd", tmp_path / "b.nrrd", "-o", tmp_path / "out", "--progress", "none",
               "--structures", "Lung_R", "--device", "cpu")
    assert done.returncode == 0, done.stderr
    rows = summary(tmp_path / "out")
    assert sorted(rows) == ["a.nrrd", "b.nrrd"] and all(r["volumes"].startswith("Lung_R") for r in rows.values())
    assert "Lung_L" not in "".join(r["volumes"] for r in rows.values())


def test_shards_cover_every_case_exactly_once():
    cases = [Case(f"patient{n:02d}/series", EXAMPLE) for n in range(11)]
    for count in (1, 2, 3, 4):
        shares = [shard(cases, f"{i}/{count}") for i in range(1, count + 1)]
        keys = [c.key for share in shares for c in share]
        assert sorted(keys) == [c.key for c in cases]
        assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("spec", ["0/2", "3/2", "1-2", "a/b"])
def test_a_bad_shard_is_refused_by_name(spec):
    with pytest.raises(InputError, match="--shard must be I/N"):
        shard([], spec)


def test_outputs_inside_the_batch_root_are_not_cases_again(tmp_path):
    shutil.copy(EXAMPLE, tmp_path / "example.nrrd")
    (tmp_path / "out" / "example.nrrd").mkdir(parents=True)
    shutil.copy(EXAMPLE, tmp_path / "out" / "example.nrrd" / "example.seg.nrrd")  # as an earlier run left
    assert [c.key for c in find_cases([], tmp_path, tmp_path / "out")] == ["example.nrrd"]
