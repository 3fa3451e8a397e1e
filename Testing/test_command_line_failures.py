"""The second real-world campaign's command-line failures (a sibling of real_world_inputs.py):
interrupted runs, names too long for the file system, dead runs' leftovers, an overwrite that
leaves another run's files, and errors nobody foresaw. Never a traceback, never half an output."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock

from bad_inputs import patient
from LungAutoSegLib import cli
from LungAutoSegLib.cli import example_ct
from test_bad_inputs import error_lines

POSIX = os.name == "posix"


def _start(arguments: list[str]) -> subprocess.Popen:
    """The command as from a terminal: with Ctrl-C's default, even when these tests were started
    in the background (a shell starts background jobs with SIGINT ignored, and children inherit it)."""
    restore = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if POSIX else None
    return subprocess.Popen([sys.executable, "-m", "LungAutoSegLib.cli", *arguments], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=restore)


def _interrupt_at(process: subprocess.Popen, stage: str, signum: int) -> list[dict]:
    """Read the JSON lines; send ``signum`` when ``stage`` begins; every line read."""
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1].get("stage") == stage:
            process.send_signal(signum)
    process.wait(timeout=120)
    return events


@pytest.mark.skipif(not POSIX, reason="signals are sent the POSIX way here")
@pytest.mark.parametrize("signum, stage, code", [(signal.SIGINT, "load_model", 130), (signal.SIGTERM, "write", 143)])
def test_an_interrupted_run_ends_its_stream_with_a_cancel_and_leaves_nothing(tmp_path, signum, stage, code):
    output = tmp_path / "out"
    process = _start(["segment", str(example_ct()), "-o", str(output), "--progress", "jsonl", "--structures",
                      "Lung_R,Lung_L"])
    events = _interrupt_at(process, stage, signum)
    stderr = process.stderr.read()
    assert process.returncode == code and "Traceback" not in stderr, stderr
    assert events[-1]["type"] == "error" and events[-1]["cancelled"] is True, events[-1]
    assert error_lines(stderr) == [f"lungautoseg: cancelled: {'interrupted (Ctrl-C)' if code == 130 else 'SIGTERM received'}; "
                                   "nothing was written"]
    assert not output.exists()  # the run made the folder, and took it with it


def test_a_dead_runs_staging_folder_goes_and_a_live_ones_stays(tmp_path):
    output = tmp_path / "out"
    dead, live = output / ".lungautoseg-dead", output / ".lungautoseg-live"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        (folder / "lung2_example.seg.nrrd").write_bytes(b"half a file")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"lock = FileLock(r'{live / '.alive'}'); lock.acquire(); print('held', flush=True); "
                               "time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(["segment", str(example_ct()), "-o", str(output), "--progress", "none",
                         "--structures", "Lung_R"]) == 0
        assert not dead.exists() and (live / "lung2_example.seg.nrrd").read_bytes() == b"half a file"
    finally:
        holder.kill()
        holder.wait()


def test_overwrite_replaces_the_earlier_runs_whole_output_set(tmp_path):
    output = tmp_path / "out"
    assert cli.main(["segment", str(example_ct()), "-o", str(output), "--progress", "none", "--review",
                     "--structures", "Lung_R"]) == 0
    assert (output / "lung2_example_review.nrrd").is_file()
    assert cli.main(["segment", str(example_ct()), "-o", str(output), "--progress", "none", "--overwrite",
                     "--structures", "Lung_R"]) == 0
    report = json.loads((output / "lung2_example_report.json").read_text())
    assert sorted(p.name for p in output.iterdir() if not p.name.startswith(".")) == sorted(
        Path(p).name for p in report["outputs"].values())
    assert not (output / "lung2_example_review.nrrd").exists()


def test_an_input_whose_outputs_would_have_too_long_names_is_refused_before_the_work(tmp_path, capsys):
    long_input = tmp_path / ("ct_" + "x" * 236 + ".nrrd")  # 244 characters: its outputs would pass 255
    long_input.write_bytes(example_ct().read_bytes())
    started = time.perf_counter()
    assert cli.main(["segment", str(long_input), "-o", str(tmp_path / "out"), "--progress", "none"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "give the input a shorter name" in lines[0] and long_input.name in lines[0]
    assert time.perf_counter() - started < 5  # refused before the network ran (a run takes several seconds)
    assert not (tmp_path / "out").exists()


def test_an_output_folder_name_too_long_for_the_file_system_is_one_line(tmp_path, capsys):
    _, ct = patient(tmp_path)
    output = tmp_path / ("o" * 300)
    assert cli.main(["segment", str(ct), "-o", str(output), "--progress", "none"]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "output folder cannot be made" in lines[0] and "File name too long" in lines[0]


def test_an_unexpected_error_is_one_line_naming_the_input_and_debug_shows_the_traceback(tmp_path, capsys,
                                                                                       monkeypatch):
    from LungAutoSegLib import segment_command

    def broken(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(segment_command, "run_segment", broken)
    arguments = ["segment", str(example_ct()), "-o", str(tmp_path / "out"), "--progress", "jsonl"]
    assert cli.main(arguments) == cli.INTERNAL_ERROR
    captured = capsys.readouterr()
    assert error_lines(captured.err) == [f"lungautoseg: error: {example_ct()}: unexpected ZeroDivisionError: division "
                                         "by zero (run again with --debug for the details)"]
    assert json.loads(captured.out.splitlines()[-1])["type"] == "error"  # the stream still ends with its word
    assert cli.main(arguments + ["--debug"]) == cli.INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_a_series_uid_not_in_the_folder_is_named_with_the_series_that_are(tmp_path, capsys):
    import pydicom

    _, ct = patient(tmp_path)
    present = pydicom.dcmread(next(ct.iterdir()), stop_before_pixels=True).SeriesInstanceUID
    assert cli.main(["segment", str(ct), "--series", "1.2.3.4.5", "-o", str(tmp_path / "out"), "--progress", "none"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "no CT series with --series 1.2.3.4.5 here" in line and present in line and "slices" in line


def test_a_series_copied_twice_into_the_tree_is_read_once_and_the_report_says_so(tmp_path):
    import shutil

    _, ct = patient(tmp_path)
    shutil.copytree(ct, ct.parent / "copy")
    assert cli.main(["segment", str(ct.parent), "-o", str(tmp_path / "out"), "--progress", "none",
                     "--structures", "Lung_R"]) == 0
    report = json.loads(next((tmp_path / "out").glob("*_report.json")).read_text())
    assert any("are copies of others in the series" in w and "each read once" in w for w in report["warnings"])


def test_library_warnings_stay_off_stderr(tmp_path):
    """A 301-character PatientName makes pydicom warn on every read: the user sees only the tool."""
    import pydicom

    _, ct = patient(tmp_path)
    for path in ct.iterdir():
        ds = pydicom.dcmread(path)
        ds.PatientName = "Long^" + "N" * 296
        ds.save_as(path)
    done = subprocess.run([sys.executable, "-m", "LungAutoSegLib.cli", "segment", str(ct), "-o",
                           str(tmp_path / "out"), "--progress", "none", "--structures", "Lung_R"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert all(line.startswith("lungautoseg: warning: ") for line in lines), done.stderr  # its own, one line each


def test_a_package_that_calls_the_right_lung_left_is_told_by_the_patients_sides(tmp_path):
    """The network of lungs 2.1.0 under a manifest that swaps the names: the report warns loudly."""
    import shutil

    from LungAutoSegLib.model_package import BUNDLED_MODELS

    swapped = tmp_path / "swapped-1.0.0"
    shutil.copytree(BUNDLED_MODELS / "lungs-2.1.0", swapped)
    manifest = json.loads((swapped / "manifest.json").read_text())
    right, left = manifest["structures"]
    right["name"], left["name"] = "Lung_L", "Lung_R"
    (swapped / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["segment", str(example_ct()), "-o", str(tmp_path / "out"), "--progress", "none",
                     "--model", str(swapped)]) == 0
    report = json.loads(next((tmp_path / "out").glob("*_report.json")).read_text())
    assert any(w.startswith("Lung_R lies on the patient's left") for w in report["warnings"]), report["warnings"]
    assert any(w.startswith("Lung_L lies on the patient's right") for w in report["warnings"]), report["warnings"]


def test_inspect_refuses_a_slice_whose_rescale_is_not_a_number_naming_it(tmp_path, capsys):
    """inspect printed ``hu_range [NaN, NaN]`` without a word: it refuses, like segment and export."""
    import pydicom

    _, ct = patient(tmp_path)
    spoiled = sorted(ct.iterdir())[4]
    ds = pydicom.dcmread(spoiled)
    ds.RescaleIntercept = "NaN"
    ds.save_as(spoiled)
    assert cli.main(["inspect", str(ct)]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert spoiled.name in line and "RescaleIntercept" in line and "finite" in line
