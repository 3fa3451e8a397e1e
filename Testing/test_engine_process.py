"""The module's way of running the engine: a real `lungautoseg segment` child process, its
JSON-lines progress, the result, errors, and cancel (process tree gone, nothing left on disk)."""
import json
import os
import time
from pathlib import Path, PureWindowsPath

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


@pytest.fixture
def warm():
    from LungAutoSegLib.engine_process import WarmEngine

    engine = WarmEngine(idle_seconds=120)
    yield engine
    engine.close()
    assert not engine.alive


def _job(seed: int = 12) -> EngineJob:
    job = EngineJob()
    write_volume(make_phantom(seed, "x_flipped").ct, job.input)
    return job


def _lung_r_centre_x(outcome: dict) -> float:
    labels = read_volume(outcome["outputs"]["labels"])
    return labels.centroid_lps(labels.array == 1)[0]


def test_a_warm_engine_answers_two_runs_from_one_process(warm):
    first, second = _job(), _job()
    try:
        outcomes = [warm.run(job, job.request(structures=["Lung_R"], device="cpu")) for job in (first, second)]
        assert [o["type"] for o in outcomes] == ["result", "result"], warm.log
        assert first.process is second.process and warm.starts == 1 and warm.alive
        assert _lung_r_centre_x(outcomes[0]) == _lung_r_centre_x(outcomes[1]) < -40  # the patient's right
        loading = [o["seconds"]["load_model"] for o in outcomes]
        assert loading[1] < 0.05 < loading[0], loading  # the second found the network loaded
    finally:
        first.cleanup(), second.cleanup()


def test_a_refused_input_ends_its_run_not_the_engine(warm):
    bad, good = EngineJob(), _job()  # no CT written for ``bad``
    try:
        refused = warm.run(bad, bad.request())
        assert refused["type"] == "error" and "no such file" in refused["message"]
        assert warm.run(good, good.request(structures=["Lung_R"], device="cpu"))["type"] == "result"
        assert warm.starts == 1
    finally:
        bad.cleanup(), good.cleanup()


def test_a_request_writes_only_the_files_it_asks_for_beside_the_report(warm):
    """The module asks for what it loads (the .seg.nrrd and the review map); a kind that does
    not exist is refused by name and the engine serves on."""
    job, bad = _job(), _job()
    try:
        outcome = warm.run(job, job.request(structures=["Lung_R"], device="cpu", review=True,
                                            files=["segmentation", "review"]))
        assert outcome["type"] == "result", warm.log
        assert set(outcome["outputs"]) == {"segmentation", "review", "report"}
        written = sorted(p.name for p in job.output.iterdir() if not p.name.startswith("."))
        assert written == sorted(Path(path).name for path in outcome["outputs"].values()), written
        assert read_volume(outcome["outputs"]["review"]).array.max() > 50  # doubt along the drawn edge
        refused = warm.run(bad, {**bad.request(), "files": ["segmentation", "mesh"]})
        assert refused["type"] == "error" and '"files" must be a list of output kinds' in refused["message"]
        assert warm.starts == 1
    finally:
        job.cleanup(), bad.cleanup()


def test_cancel_kills_the_warm_engine_and_the_next_run_starts_a_fresh_one(warm):
    cancelled, after = _job(), _job()
    outcome = warm.run(cancelled, cancelled.request(device="cpu"), on_event=lambda event: cancelled.cancel())
    assert outcome == {"type": "error", "message": "cancelled by the user"}
    assert not warm.alive and not cancelled.work.exists()
    with pytest.raises(ProcessLookupError):
        os.killpg(cancelled.process.pid, 0)
    try:
        assert warm.run(after, after.request(structures=["Lung_R"], device="cpu"))["type"] == "result"
        assert warm.starts == 2
    finally:
        after.cleanup()


def test_a_crashed_engine_is_restarted_once_with_a_log_line(warm):
    job, killed = _job(), []

    def crash_once(event):
        if not killed:
            killed.append(job.process.pid)
            os.killpg(job.process.pid, 9)

    try:
        outcome = warm.run(job, job.request(structures=["Lung_R"], device="cpu"), crash_once)
        assert outcome["type"] == "result" and warm.starts == 2 and job.process.pid != killed[0]
        assert any("stopped (exit code -9) without an answer; starting a fresh one" in line for line in job.log)
    finally:
        job.cleanup()


def test_a_warm_engine_exits_by_itself_when_idle_and_when_its_input_closes():
    from LungAutoSegLib.engine_process import WarmEngine

    idle, closed = WarmEngine(idle_seconds=1), WarmEngine(idle_seconds=120)
    jobs = [EngineJob(), EngineJob()]
    try:
        for engine, job in zip((idle, closed), jobs):
            assert engine.run(job, job.request())["type"] == "error"  # no CT: a quick answer, the engine stays
        idle.process.wait(timeout=60)
        assert idle.process.returncode == 0 and any("idle for 1 s: exiting" in line for line in idle.log)
        closed.process.stdin.close()  # what Slicer's exit does to the pipe
        assert closed.process.wait(timeout=60) == 0
    finally:
        for job in jobs:
            job.cleanup()
