"""Run ``lungautoseg segment`` in a child process and follow its JSON-lines progress.

The Slicer module's Logic runs the engine this way (Slicer's UI stays responsive, and a
cancel really stops the work). Kept free of Qt and MRML so it is tested against the real
engine: the command line, progress parsing, the final result or error, and cancel, which
kills the whole process tree and removes the job's temporary folder.
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

    def command(self, *, model=None, structures: list[str] | None = None, device: str = "auto",
                review: bool = False) -> list[str]:
        command = [self.python, "-m", "LungAutoSegLib.cli", "segment", str(self.input), "-o", str(self.output),
                   "--progress", "jsonl", "--device", device] + (["--review"] if review else [])
        if model is not None:
            command += ["--model", str(model)]
        if structures:
            command += ["--structures", ",".join(structures)]
        return command

    def start(self, command: list[str], environment: dict | None = None) -> None:
        group = ({"start_new_session": True} if os.name == "posix"
                 else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP})
        # UTF-8 both ways: on Windows the locale's code page (cp1252) cannot carry a patient's
        # name or a path in another script; universal newlines turn Windows' CRLF into LF.
        environment = {**(os.environ if environment is None else environment), "PYTHONIOENCODING": "utf-8"}
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                        encoding="utf-8", errors="replace", env=environment, **group)
        threading.Thread(target=self._collect_stderr, daemon=True).start()

    def _collect_stderr(self) -> None:
        for line in self.process.stderr:
            self.log.append(line.rstrip("\n"))

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
        """Read progress until the engine ends (blocking); returns the outcome."""
        for line in self.process.stdout:
            for event in self.events_from([line]):
                if on_event:
                    on_event(event)
        self.process.wait()
        return self.outcome

    @property
    def outcome(self) -> dict:
        """The final result or error event; an error when the engine ended without one."""
        if self.cancelled:
            return {"type": "error", "message": "cancelled by the user"}
        if self.events and self.events[-1]["type"] in ("result", "error"):
            return self.events[-1]
        code = self.process.returncode if self.process else None
        return {"type": "error", "message": f"the engine stopped (exit code {code}): " + " / ".join(self.log[-3:])}

    def cancel(self) -> None:
        """Kill the engine and everything it started, then remove the temporary folder."""
        self.cancelled = True
        if self.process is not None and self.process.poll() is None:
            if os.name == "posix":
                os.killpg(self.process.pid, signal.SIGKILL)
            else:
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], capture_output=True)
            self.process.wait()
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
