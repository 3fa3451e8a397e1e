"""``lungautoseg engine``: the engine as a long-lived child process, models kept loaded.

The Slicer module starts it once and sends one request per run, a JSON object per line on
stdin: ``{"input": ..., "output": ..., "model": null, "structures": null, "device": "auto",
"review": false, "files": null}`` (``files``: the output kinds to write beside the report, null:
all). Each request is answered on stdout exactly as ``segment --progress jsonl``
answers: progress lines, then one result or error line. A second run pays neither Python's
start, nor the torch import, nor the model load.

It ends by itself: on end of input (its parent closed the pipe or died), or after ``idle``
seconds without a request. Input is read by a thread so that the idle wait works the same on
Windows, where ``select`` does not take pipes.
"""
from __future__ import annotations

import json
import queue
import sys
import threading
from pathlib import Path

from .errors import InputError
from .progress import Progress

DEFAULT_IDLE_SECONDS = 600.0


class LoadedModels:
    """Packages and their networks, loaded once per (package, device) and kept. A package whose
    manifest changed on disk since is loaded (and verified) again."""

    def __init__(self):
        self._loaded: dict[tuple, tuple] = {}

    def get(self, model, device: str) -> tuple:
        """(package, network or networks) for ``model`` (a path, or None: the bundled default)."""
        from .inference import resolve_device
        from .model_package import MANIFEST_NAME, bundled_package, load_package

        path = Path(model).resolve() if model is not None else bundled_package()
        manifest = path / MANIFEST_NAME
        key = (str(path), manifest.stat().st_mtime_ns if manifest.is_file() else None, resolve_device(device))
        if key not in self._loaded:
            for stale in [k for k in self._loaded if (k[0], k[2]) == (key[0], key[2])]:
                del self._loaded[stale]  # the package changed on disk: its old network goes
            package = load_package(path)
            self._loaded[key] = (package, package.load_network(key[2]))
        return self._loaded[key]


def _requests(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)  # end of input


def _options(request: dict) -> dict:
    """The run_segment options of one request; a malformed request is an InputError."""
    if not isinstance(request, dict) or not isinstance(request.get("input"), str) \
            or not isinstance(request.get("output"), str):
        raise InputError("an engine request must be a JSON object with \"input\" and \"output\" paths")
    from .segment_command import OUTPUTS

    structures, files = request.get("structures"), request.get("files")
    if structures is not None and not (isinstance(structures, list) and all(isinstance(s, str) for s in structures)):
        raise InputError("\"structures\" must be a list of names")
    if files is not None and not (isinstance(files, list) and set(files) <= set(OUTPUTS)):
        raise InputError(f"\"files\" must be a list of output kinds: {', '.join(OUTPUTS)}")
    return {"source": Path(request["input"]), "output": Path(request["output"]), "model": request.get("model"),
            "structures": structures or None, "device": str(request.get("device", "auto")),
            "review": bool(request.get("review", False)), "overwrite": bool(request.get("overwrite", False)),
            "files": files}


def serve(idle_seconds: float = DEFAULT_IDLE_SECONDS, stdin=None, stdout=None) -> int:
    """Answer requests until end of input or ``idle_seconds`` without one; exit code 0. A refused
    input ends its request, not the engine; an unexpected error ends both."""
    from .segment_command import segment_with_events

    models, lines = LoadedModels(), queue.Queue()
    threading.Thread(target=_requests, args=(stdin or sys.stdin, lines), daemon=True).start()
    while True:
        try:
            line = lines.get(timeout=idle_seconds)
        except queue.Empty:
            print(f"lungautoseg: engine idle for {idle_seconds:g} s: exiting", file=sys.stderr)
            return 0
        if line is None:
            return 0
        if not line.strip():
            continue
        progress = Progress("jsonl", stdout)
        try:
            options = _options(_parsed(line))
        except InputError as error:
            progress.error(str(error))
            continue
        try:
            segment_with_events(progress, models=models, **options)
        except InputError as error:  # told on the stream; the next request is served
            print(f"lungautoseg: error: {error}", file=sys.stderr, flush=True)
        # anything else was told on the stream too and ends the engine through the command line's
        # one-line error (exit 3); the module starts a fresh one for its next run


def _parsed(line: str):
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise InputError(f"an engine request is not JSON ({error})") from None
