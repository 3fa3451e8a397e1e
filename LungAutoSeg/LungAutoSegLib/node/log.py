"""The node's log: one JSON object per line, with patient IDs but never names."""
from __future__ import annotations

import datetime
import json
import sys
import threading
from pathlib import Path


class JsonLog:
    def __init__(self, path: Path | None = None):
        self._lock = threading.Lock()
        self._file = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 - kept open while serving

    def __call__(self, event: str, **fields) -> None:
        line = json.dumps({"time": datetime.datetime.now().astimezone().isoformat(timespec="milliseconds"),
                           "event": event, **fields}, ensure_ascii=False, default=str)
        with self._lock:
            stream = self._file or sys.stderr
            stream.write(line + "\n")
            stream.flush()

    def close(self) -> None:
        if self._file:
            self._file.close()
