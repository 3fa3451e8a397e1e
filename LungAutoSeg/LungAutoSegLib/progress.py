"""Progress of a job: a bar for people, or JSON lines for the Slicer module.

``jsonl`` writes one JSON object per line on stdout and nothing else there:
``{"type": "progress", "stage": ..., "fraction": 0..1, "message": ...}``, then exactly one
``{"type": "result", ...}`` or ``{"type": "error", "message": ..., "path": ...}`` (with
``"cancelled": true`` when Ctrl-C or SIGTERM stopped it).
"""
from __future__ import annotations

import json
import sys


class Progress:
    def __init__(self, mode: str = "bar", stream=None):
        if mode not in ("bar", "jsonl", "none"):
            raise ValueError(f"unknown progress mode {mode!r}")
        self.mode, self.stream = mode, stream or sys.stdout
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=100, unit="%", file=sys.stderr, bar_format="{l_bar}{bar}| {elapsed}")

    def _line(self, payload: dict) -> None:
        self.stream.write(json.dumps(payload) + "\n")
        self.stream.flush()

    def stage(self, stage: str, fraction: float, message: str = "") -> None:
        if self.mode == "jsonl":
            self._line({"type": "progress", "stage": stage, "fraction": round(fraction, 3), "message": message})
        elif self.bar is not None:
            self.bar.set_description(stage)
            self.bar.update(int(round(fraction * 100)) - self.bar.n)

    def result(self, payload: dict) -> None:
        self.close()
        if self.mode == "jsonl":
            self._line({"type": "result", **payload})

    def error(self, message: str, path: str | None = None, cancelled: bool = False) -> None:
        """The final word of a failed run; ``cancelled``: stopped by Ctrl-C or a signal."""
        self.close()
        if self.mode == "jsonl":
            self._line({"type": "error", "message": message, "path": path, **({"cancelled": True} if cancelled else {})})

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
