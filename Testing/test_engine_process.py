"""The module's way of running the engine: a real `lungautoseg segment` child process, its
JSON-lines progress, the result, errors, and cancel (process tree gone, nothing left on disk)."""
import os

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
