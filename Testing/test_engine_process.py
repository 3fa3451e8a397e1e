"""The module's way of running the engine: a real `lungautoseg segment` child process, its
JSON-lines progress, the result, errors, and cancel (process tree gone, nothing left on disk)."""
import json
import os
import time
from pathlib import PureWindowsPath

import numpy as np
import pytest

from conftest import make_phantom
from LungAutoSegLib.engine_process import EngineJob
from LungAutoSegLib.image_io import read_volume, write_volume


def test_a_job_runs_the_engine_and_reports_progress_then_the_result():
    job = EngineJob()
    phantom = make_phantom(12, "x_flipped")
    write_volume(phantom.ct, job.input)
    job.start(job.command(structures=["Lung_R"], device="cpu"))
    seen = []
    outcome = job.follow(seen.append)
    try:
        assert outcome["type"] == "result", job.log
        fractions = [e["fraction"] for e in seen if e["type"] == "progress"]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        labels = read_volume(outcome["outputs"]["labels"])
        assert set(np.unique(labels.array)) == {0, 1}
        assert labels.centroid_lps(labels.array == 1)[0] < -40
    finally:
        job.cleanup()
    assert not job.work.exists()


def test_an_engine_error_comes_back_as_the_outcome():
    job = EngineJob()  # no CT written
    job.start(job.command())
    outcome = job.follow()
    job.cleanup()
    assert outcome["type"] == "error" and "no such file" in outcome["message"]
    assert job.process.returncode == 2


def test_cancel_kills_the_process_tree_and_removes_the_temporary_folder():
    job = EngineJob()
    phantom = make_phantom(13, "nonsquare_unequal")
    write_volume(phantom.ct, job.input)
    job.start(job.command(device="cpu"))
    first = next(iter(job.process.stdout))  # the engine is running: it reported its first stage
    assert job.events_from([first])[0]["type"] == "progress"
    job.cancel()
    with pytest.raises(ProcessLookupError):
        os.killpg(job.process.pid, 0)  # no process of the engine's group is left
    assert job.process.returncode < 0 and not job.work.exists()
    assert job.outcome == {"type": "error", "message": "cancelled by the user"}


def test_lines_that_are_not_engine_events_go_to_the_log():
    job = EngineJob()
    events = job.events_from(['{"type": "progress", "stage": "read", "fraction": 0}', "a warning from a library",
                              "[1, 2]", ""])
    job.cleanup()
    assert [e["stage"] for e in events] == ["read"]
    assert job.log == ["a warning from a library", "[1, 2]"]


def test_progress_lines_from_windows_parse_with_their_paths_and_line_endings():
    """What the engine prints on Windows: CRLF line ends, backslashed paths, a UTF-8 message."""
    job = EngineJob()
    try:
        report = r"C:\Users\Dosimetrist\AppData\Local\Temp\LungAutoSeg-x1\output\ct_report.json"
        lines = [json.dumps({"type": "progress", "stage": "read", "fraction": 0.0,
                             "message": r"reading C:\Temp\Müller ct.nrrd"}) + "\r\n",
                 "\r\n", "a stray line from a library\r\n",
                 json.dumps({"type": "result", "outputs": {"report": report}}) + "\r\n"]
        events = job.events_from(lines)
        assert [e["type"] for e in events] == ["progress", "result"]
        assert events[0]["message"] == r"reading C:\Temp\Müller ct.nrrd"
        assert PureWindowsPath(events[1]["outputs"]["report"]).name == "ct_report.json"
        assert job.log == ["a stray line from a library"]
        assert job.outcome["outputs"]["report"] == report
    finally:
        job.cleanup()


def test_the_engine_child_speaks_utf8_whatever_the_locale(tmp_path):
    """A non-ASCII path in an error message survives the pipe (cp1252 would not carry it)."""
    job = EngineJob()
    try:
        missing = tmp_path / "山田 太郎" / "ct.nrrd"
        command = job.command()
        command[command.index(str(job.input))] = str(missing)
        job.start(command, dict(os.environ, PYTHONIOENCODING="ascii", LC_ALL="C"))
        outcome = job.follow()
        assert outcome["type"] == "error" and "山田 太郎" in outcome["message"]
        deadline = time.monotonic() + 5
        while not any("山田 太郎" in line for line in job.log) and time.monotonic() < deadline:
            time.sleep(0.05)  # the stderr reader thread finishes after the process
        assert any(line.startswith("lungautoseg: error: ") and "山田 太郎" in line for line in job.log), job.log
        assert not any("Traceback" in line for line in job.log)
    finally:
        job.cleanup()
