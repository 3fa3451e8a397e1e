"""The DICOM node under test, with DCMTK's own tools as the scanner (storescu, echoscu) and the
planning system (storescp), all on loopback. DCMTK is required, never skipped: .ci/install
installs it."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

import thorax_phantom as tp
from LungAutoSegLib.image_io import read_volume
from LungAutoSegLib.model_package import BUNDLED_MODELS

EXAMPLE = BUNDLED_MODELS.parent / "Example" / "lung2_example.nrrd"
SCANNER, NODE, TPS = "SCANNER", "LUNGAUTOSEG", "TPS"


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"DCMTK's {tool} is missing: .ci/install installs the Debian package dcmtk")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float = 120.0, what: str = "the condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def example_series(folder: Path, patient_id: str) -> str:
    """The embedded example CT as a DICOM series of 61 slices; returns its SeriesInstanceUID."""
    return str(tp.write_ct_series(read_volume(EXAMPLE), folder, patient_id, generate_uid()).datasets[0]
               .SeriesInstanceUID)


class Tps:
    """storescp: writes what it receives into ``folder`` (named by SOP instance UID)."""

    def __init__(self, folder: Path, port: int | None = None, sleep_after: int = 0):
        self.folder, self.port, self.sleep_after = folder, port or free_port(), sleep_after
        self.process = None
        folder.mkdir(parents=True, exist_ok=True)

    def start(self) -> "Tps":
        # --fork: one process per association, so a sender killed mid-C-STORE holds up no other
        extra = ["--fork", "--sleep-after", str(self.sleep_after)] if self.sleep_after else []
        self.process = subprocess.Popen([dcmtk("storescp"), "-aet", TPS, "-od", str(self.folder), *extra,
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait_for(lambda: _listening(self.port), 20, "storescp to listen")
        return self

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)  # with its --fork children
            self.process.wait()

    def rtstructs(self) -> list:
        return self.received("RTSTRUCT")

    def received(self, modality: str) -> list:
        """The datasets of that modality received, each with its ``filename``."""
        found = [dcmread(p) for p in sorted(self.folder.iterdir()) if p.is_file()]
        return [d for d in found if d.Modality == modality]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Node:
    """``lungautoseg serve`` in a child process, on its own configuration."""

    def __init__(self, root: Path, tps_port: int, destination_lines: tuple[str, ...] = (), **node_settings):
        self.root, self.port = root, free_port()
        root.mkdir(parents=True, exist_ok=True)
        settings = {"ae_title": NODE, "host": "127.0.0.1", "port": self.port, "spool": "spool",
                    "series_complete_seconds": 2, "log_file": "node.log", **node_settings}
        lines = ["[node]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items()),
                 "[[peers]]", f'ae_title = "{SCANNER}"', "[destination]", f'ae_title = "{TPS}"',
                 'host = "127.0.0.1"', f"port = {tps_port}", "retry_first_seconds = 1", "retry_max_seconds = 2",
                 *destination_lines]
        self.config = root / "node.toml"
        self.config.write_text("\n".join(lines) + "\n")
        self.process = None

    def start(self) -> "Node":
        self.process = subprocess.Popen([sys.executable, "-m", "LungAutoSegLib.cli", "serve", "--config",
                                         str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda: self.process.poll() is not None or _listening(self.port), 120, "the node to listen")
        assert self.process.poll() is None, self.process.stderr.read().decode()
        return self

    def kill(self) -> None:
        """SIGKILL where there is one: no clean-up code runs, as in a crash or power cut."""
        self.process.send_signal(signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> list[dict]:
        path = self.root / "node.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def events(self, name: str) -> list[dict]:
        return [e for e in self.log() if e["event"] == name]

    def jobs(self) -> dict[str, dict]:
        path = self.root / "spool" / "journal.sqlite"
        if not path.is_file():
            return {}
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            db.row_factory = sqlite3.Row
            return {r["series_uid"]: dict(r) for r in db.execute("SELECT * FROM jobs")}

    def state(self, series_uid: str) -> str | None:
        return self.jobs().get(series_uid, {}).get("state")

    def journal_events(self, series_uid: str) -> list[str]:
        path = self.root / "spool" / "journal.sqlite"
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            return [f"{state}: {detail}" for state, detail in
                    db.execute("SELECT state, detail FROM events WHERE series_uid = ? ORDER BY rowid", (series_uid,))]


def storescu(node: Node, *paths: Path, calling: str = SCANNER, wait: bool = True, extra=()):
    command = [dcmtk("storescu"), "-aet", calling, "-aec", NODE, *extra, "127.0.0.1", str(node.port),
               "+sd", *map(str, paths)]
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(command, capture_output=True, text=True, timeout=300)
