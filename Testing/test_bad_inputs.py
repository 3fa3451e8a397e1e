"""Every bad input through both commands: a non-zero exit, one message naming the file and
the problem, no partial output, and the input untouched (the corpus is bad_inputs.py)."""
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs import CORPUS, BadInput, patient
from LungAutoSegLib.cli import main as engine
from lungautoseg_train.cli import main as train_cli


def fingerprint(root: Path) -> str:
    """Names, bytes and modification times of every file under root."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(f"{path.relative_to(root)}|{path.stat().st_mtime_ns}|".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def leftovers(folder: Path) -> list[str]:
    """What a failed run left in its output folder (the lock file is not output)."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name != ".lungautoseg.lock")


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_segment_answers_every_bad_input_with_one_clear_error_and_no_output(case: BadInput, tmp_path, capsys):
    written = case.write(tmp_path / "input")
    before = fingerprint(tmp_path / "input")
    output = tmp_path / "out"
    code = engine(["segment", str(written.segment_input), "-o", str(output), "--progress", "none"])
    captured = capsys.readouterr()
    assert fingerprint(tmp_path / "input") == before  # the input is untouched
    if case.segment is None:  # fine for segment (case.note says why)
        assert code == 0, captured.err
        return
    lines = error_lines(captured.err)
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("lungautoseg: error: ") and "Traceback" not in captured.err
    for word in case.segment:
        assert word in lines[0], lines[0]
    named = [written.segment_input.name, *(p.name for p in written.segment_input.glob("*"))]
    assert any(name in lines[0] for name in named), lines[0]  # names the file or folder
    assert not output.exists()  # no output, not even the folder


EXPORTABLE = [c for c in CORPUS if c.dicom]


@pytest.mark.parametrize("case", EXPORTABLE, ids=[c.name for c in EXPORTABLE])
def test_export_answers_every_bad_input_with_its_reason_and_no_partial_case(case: BadInput, tmp_path, capsys):
    written = case.write(tmp_path / "input")
    before = fingerprint(tmp_path / "input")
    out = tmp_path / "export"
    code = train_cli(["export", "--dicom-root", str(written.export_root), "--roi", "Lung_R,Lung_L",
                      "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert fingerprint(tmp_path / "input") == before
    assert "Traceback" not in captured.err and code != 0
    if code == 2:  # nothing to export at all: one error line
        lines = error_lines(captured.err)
        assert len(lines) == 1 and all(word in lines[0] for word in case.export), captured.err
        assert not out.exists() or not any(out.iterdir())
        return
    assert code == 1  # some case left out: each reason in the report and on the console
    cases = json.loads((out / "export_report.json").read_text())["cases"]
    skipped = [c for c in cases if c["status"] == "skipped"]
    assert len(skipped) == 1 and all(c["status"] == "exported" for c in cases if c not in skipped)
    assert all(word in skipped[0]["reason"] for word in case.export), skipped[0]["reason"]
    assert f"{skipped[0]['case']}: skipped: " in captured.out
    exported = [p.name for p in (out / "images").glob("*")] if (out / "images").exists() else []
    assert exported == [f"{c['case']}.nii.gz" for c in cases if c["status"] == "exported"]  # no partial case


def test_a_memory_limit_refuses_a_dicom_ct_before_reading_its_pixels(tmp_path, capsys, monkeypatch):
    _, ct = patient(tmp_path)
    monkeypatch.setenv("LUNGAUTOSEG_MEMORY_GB", "0.0001")  # 0.1 MB; the 64x56x12 phantom needs 16 x 43 k voxels
    code = engine(["segment", str(ct), "-o", str(tmp_path / "out"), "--progress", "none"])
    message = capsys.readouterr().err
    assert code == 2 and "would need about" in message and "64x56x12" in message and str(ct) in message


@pytest.mark.parametrize("where", ["cannot be created", "exists but refuses files"])
def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys, where):
    _, ct = patient(tmp_path)
    if where == "cannot be created":
        (tmp_path / "a_file").write_text("x")
        output = tmp_path / "a_file" / "out"           # under a file: no folder can be made
    elif os.geteuid() == 0:
        output = Path("/sys/fs")                       # root ignores permission bits; sysfs refuses files
    else:
        output = tmp_path / "locked"
        output.mkdir(mode=0o555)
    code = engine(["segment", str(ct), "-o", str(output), "--progress", "none"])
    message = capsys.readouterr().err
    assert code == 2 and str(output) in message and "output" in message and "Traceback" not in message


def test_a_write_that_fails_half_way_leaves_nothing(tmp_path):
    """A real failing write: the engine runs with an 8 kB file-size limit (as on a full disk),
    so the larger output files break off part-way through."""
    _, ct = patient(tmp_path)
    before = fingerprint(ct)

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (8_000, 8_000))

    output = tmp_path / "out"
    output.mkdir()
    (output / "plan_notes.txt").write_text("the user's own file")
    run = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "segment", str(ct), "-o", str(output),
                          "--progress", "none"], capture_output=True, text=True, timeout=300,
                         preexec_fn=limit_file_size)
    assert run.returncode == 2, run.stderr
    assert "could not write the outputs" in run.stderr and "File too large" in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert leftovers(output) == ["plan_notes.txt"]  # no output, no staging folder; the user's file kept
    assert (output / "plan_notes.txt").read_text() == "the user's own file"
    assert fingerprint(ct) == before
