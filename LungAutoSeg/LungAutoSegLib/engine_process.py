"""Run the engine in a child process and follow its JSON-lines progress.

The Slicer module's Logic runs the engine this way (Slicer's UI stays responsive, and a
cancel really stops the work): ``EngineJob`` is one run in its own temporary folder, either
its own ``lungautoseg segment`` process or a request to a ``WarmEngine`` (``lungautoseg
engine``), which keeps the model loaded between runs. Kept free of Qt and MRML so it is tested
against the real engine: progress parsing, the final result or error, cancel (which kills the
whole process tree and removes the job's folder), a crashed engine restarted once, the idle exit.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from .engine_server import DEFAULT_IDLE_SECONDS


class EngineJob:
    """One engine run in its own temporary folder (input CT, outputs), removed by ``cleanup``."""

    def __init__(self, python: str = sys.executable):
        self.python = python
        self.work = Path(tempfile.mkdtemp(prefix="LungAutoSeg-"))
        self.input = self.work / "ct.nrrd"     # the caller writes the CT here
        self.output = self.work / "output"
        self.events: list[dict] = []
        self.log: list[str] = []
        self.process: subprocess.Popen | None = None
        self.cancelled = False
        self.one_shot = False

    def request(self, *, model=None, structures: list[str] | None = None, device: str = "auto",
                review: bool = False, files: list[str] | None = None) -> dict:
        """This job as one request to a ``WarmEngine``. ``files``: the output kinds it writes beside
        the report (None: all; a one-shot ``command`` writes all)."""
        return {"input": str(self.input), "output": str(self.output), "model": None if model is None else str(model),
                "structures": structures or None, "device": device, "review": review, "files": files}

    def command(self, **options) -> list[str]:
        """This job as its own ``lungautoseg segment`` process (``options`` as for ``request``)."""
        request = self.request(**options)
        command = [self.python, "-m", "LungAutoSegLib.cli", "segment", request["input"], "-o", request["output"],
                   "--progress", "jsonl", "--device", request["device"]] + (["--review"] if request["review"] else [])
        if request["model"] is not None:
            command += ["--model", request["model"]]
        if request["structures"]:
            command += ["--structures", ",".join(request["structures"])]
        return command

    def start(self, command: list[str], environment: dict | None = None) -> None:
        self.process = start_engine(command, environment, self.log.append)
        self.one_shot = True  # its own process, which ends with the answer

    def events_from(self, lines) -> list[dict]:
        """Parse engine stdout lines; anything that is not a JSON object goes to the log."""
        parsed = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "type" in event:
                parsed.append(event)
            else:
                self.log.append(line)
        self.events += parsed
        return parsed

    def follow(self, on_event=None) -> dict:
        """Read progress until the job's result or error, or the engine's end (blocking); the outcome."""
        for line in self.process.stdout:
            for event in self.events_from([line]):
                if on_event:
                    on_event(event)
            if self.answered:
                break
        if self.one_shot or not self.answered:
            self.process.wait()
        return self.outcome

    @property
    def answered(self) -> bool:
        return bool(self.events) and self.events[-1]["type"] in ("result", "error")

    @property
    def outcome(self) -> dict:
        """The final result or error event; an error when the engine ended without one."""
        if self.cancelled:
            return {"type": "error", "message": "cancelled by the user"}
        if self.answered:
            return self.events[-1]
        code = self.process.returncode if self.process else None
        return {"type": "error", "message": f"the engine stopped (exit code {code}): " + " / ".join(self.log[-3:])}

    def cancel(self) -> None:
        """Kill the engine and everything it started, then remove the temporary folder."""
        self.cancelled = True
        kill_tree(self.process)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


def start_engine(command: list[str], environment: dict | None, on_log_line) -> subprocess.Popen:
    """The engine child in its own process group, each line of its stderr to ``on_log_line``."""
    group = ({"start_new_session": True} if os.name == "posix"
             else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP})
    # UTF-8 both ways: on Windows the locale's code page (cp1252) cannot carry a patient's
    # name or a path in another script; universal newlines turn Windows' CRLF into LF.
    environment = {**(os.environ if environment is None else environment), "PYTHONIOENCODING": "utf-8"}
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, encoding="utf-8", errors="replace", env=environment, **group)

    def collect():
        for line in process.stderr:
            on_log_line(line.rstrip("\n"))

    threading.Thread(target=collect, daemon=True).start()
    return process


def kill_tree(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True)
        process.wait()


class WarmEngine:
    """One ``lungautoseg engine`` child kept between runs for one model choice. It is started on
    the first run, and again after a cancel (which kills it), a crash or its idle exit. ``close``
    ends it (the module calls it when the model choice changes and when Slicer quits)."""

    def __init__(self, python: str = sys.executable, environment: dict | None = None,
                 idle_seconds: float = DEFAULT_IDLE_SECONDS):
        self.command = [python, "-m", "LungAutoSegLib.cli", "engine", "--idle-exit", f"{idle_seconds:g}"]
        self.environment = environment
        self.process: subprocess.Popen | None = None
        self.log: list[str] = []  # the engine's stderr over all runs; each job's own lines in job.log
        self.job: EngineJob | None = None
        self.starts = 0
        self._busy = threading.Lock()  # one request at a time: answers are not tagged by job

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def run(self, job: EngineJob, request: dict, on_event=None) -> dict:
        """``submit`` then ``answer``: the whole run, blocking."""
        self.submit(job, request)
        return self.answer(job, request, on_event)

    def submit(self, job: EngineJob, request: dict) -> None:
        """Send ``job``'s request (starting the engine if none is alive). Done before any thread
        follows it, so that a cancel from then on finds the process to kill."""
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("the LungAutoSeg engine is busy with another run: wait for it or cancel it")
        try:
            self._send(job, request)
        except BaseException:
            self._busy.release()
            raise

    def answer(self, job: EngineJob, request: dict, on_event=None) -> dict:
        """Follow the submitted ``job`` to its outcome. An engine that dies without an answer (a
        crash, not a cancel) is started afresh and asked once more, with a log line."""
        try:
            outcome = job.follow(on_event)
            if job.answered or job.cancelled:
                return outcome
            self._log_line(f"LungAutoSeg: the engine process stopped (exit code {self.process.returncode}) "
                           "without an answer; starting a fresh one and running again")
            job.events.clear()
            self._send(job, request)
            return job.follow(on_event)
        finally:
            self._busy.release()

    def _send(self, job: EngineJob, request: dict) -> None:
        self.job = job
        if job.cancelled:  # cancelled while the engine restarted: nothing more to ask
            return
        if not self.alive:
            self.process = start_engine(self.command, self.environment, self._log_line)
            self.starts += 1
        job.process = self.process
        try:
            self.process.stdin.write(json.dumps(request) + "\n")
            self.process.stdin.flush()
        except OSError:  # it died between the check and the write: follow() reads its end
            pass

    def _log_line(self, line: str) -> None:
        self.log.append(line)
        if self.job is not None:
            self.job.log.append(line)

    def close(self, timeout: float = 10.0) -> None:
        """End the engine: close its input (it exits by itself), kill it if it does not."""
        if self.alive:
            try:
                self.process.stdin.close()
                self.process.wait(timeout)
            except (OSError, subprocess.TimeoutExpired):
                kill_tree(self.process)
        self.process = None
