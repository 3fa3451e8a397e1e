"""``lungautoseg``: the engine's command line: ``segment``, ``info``, ``inspect``, ``engine``."""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError
from .ct_reader import read_ct
from .engine_server import DEFAULT_IDLE_SECONDS


def describe(volume) -> dict:
    """Geometry and intensity summary of a CT, in the project's convention (LPS, mm)."""
    i, j, k = volume.shape_ijk
    corners = np.array([[a, b, c, 1] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)])
    extent = (corners @ volume.ijk_to_lps.T)[:, :3]
    return {
        "size_ijk": [i, j, k],
        "spacing_mm": [round(float(s), 4) for s in volume.spacing],
        "origin_lps_mm": [round(float(o), 3) for o in volume.origin],
        "direction": [[round(float(v), 6) for v in row] for row in volume.direction],
        "lps_bounds_mm": [[round(float(v), 2) for v in extent.min(axis=0)],
                          [round(float(v), 2) for v in extent.max(axis=0)]],
        "hu_range": [float(volume.array.min()), float(volume.array.max())],
        "warnings": volume.warnings,
    }


def _inspect(args) -> int:
    volume = read_ct(args.input, args.series).volume
    print(json.dumps({"input": str(args.input), **describe(volume)}, indent=2))
    return 0


def _segment(args) -> int:
    from .progress import Progress
    from .segment_command import segment_with_events

    if len(args.input) > 1 or args.batch or args.shard:
        return _segment_batch(args)
    args.input = args.input[0] if args.input else None
    progress = Progress(args.progress)
    source = example_ct() if args.example else args.input
    if source is None:
        raise InputError("name an INPUT (DICOM folder, NRRD, NIfTI or MHA), or use --example")
    output = args.output or (Path("lungautoseg-example") if args.example else Path(output_dir_name(source)))
    structures = _structures(args)
    report = segment_with_events(progress, source, output, model=args.model, structures=structures,
                                 device=args.device, series_uid=args.series, overwrite=args.overwrite,
                                 review=args.review, dicom_seg=args.dicom_seg)
    for warning in report["warnings"]:  # on stderr, so a script that reads stdout still sees them
        print(f"lungautoseg: warning: {warning}", file=sys.stderr)
    if args.progress != "jsonl":
        for name, facts in report["structures"].items():
            print(f"{name}: {facts['volume_ml']} ml, {facts['components']} component(s)")
        for line in report.get("review", {}).get("summary", []):
            print(f"review {line}")
        print(f"{report['seconds']['total']} s on {report['device']}; outputs in {output}")
    return 0


def _structures(args) -> list[str] | None:
    return [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None


def _segment_batch(args) -> int:
    """Several inputs or ``--batch ROOT``: exit 0 when every case is done (now or earlier), 1 when
    any was refused or failed (summary.csv says which and why)."""
    from .batch import SUMMARY_NAME, find_cases, run_batch, shard

    if args.example or args.series:
        raise InputError("--example and --series name one CT; they do not combine with several inputs or --batch")
    output = args.output or Path("lungautoseg-batch")
    structures = _structures(args)
    cases = shard(find_cases(args.input, args.batch, output), args.shard)
    rows = run_batch(cases, output, model=args.model, structures=structures, device=args.device,
                     bar=args.progress == "bar", dicom_seg=args.dicom_seg)
    counts = {status: sum(r["status"] == status for r in rows) for status in ("done", "done earlier", "refused", "failed")}
    print(", ".join(f"{n} {status}" for status, n in counts.items()) + f"; summary in {output / SUMMARY_NAME}")
    return 1 if counts["refused"] or counts["failed"] else 0


def _serve(args) -> int:
    if args.example_config:
        from .node.config import EXAMPLE

        print(EXAMPLE, end="")
        return 0
    if args.config is None:
        raise InputError("name the node's configuration: --config node.toml (--example-config prints one)")
    from .node.service import serve

    return serve(args.config)


def _node_status(args) -> int:
    from .node.service import status

    print(status(args.config))
    return 0


def _engine(args) -> int:
    from .engine_server import serve

    return serve(args.idle_exit)


def output_dir_name(source: Path) -> str:
    from .segment_command import output_name

    return f"{output_name(source)}_lungautoseg"


def example_ct() -> Path:
    from .model_package import BUNDLED_MODELS

    return BUNDLED_MODELS.parent / "Example" / "lung2_example.nrrd"


def _info(args) -> int:
    from .model_package import load_package

    package = load_package(args.model)
    card = package.root / "MODEL_CARD.md"
    print(card.read_text() if card.is_file() else json.dumps(package.manifest, indent=2))
    print(f"Package: {package.root}\nWeights SHA-256 (verified): {package.manifest['weights']['sha256']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lungautoseg", description="LungAutoSeg engine")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="on an unexpected error, print its traceback")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", parents=[common], help="read a CT (DICOM folder, NRRD, NIfTI, MHA), "
                                                                    "check it, print its geometry")
    inspect.add_argument("input", type=Path)
    inspect.add_argument("--series", help="SeriesInstanceUID, when the folder holds several CT series")
    inspect.set_defaults(run=_inspect)

    segment = commands.add_parser("segment", parents=[common],
                                  help="contour a CT: .seg.nrrd, NIfTI labels, RTSTRUCT (DICOM input), report, preview")
    segment.add_argument("input", type=Path, nargs="*",
                         help="DICOM series folder, NRRD, NIfTI or MHA; several: a batch run")
    segment.add_argument("--batch", type=Path, metavar="ROOT",
                         help="contour every CT series and volume file under ROOT, each into OUTPUT/<patient>/"
                              "<series>, with OUTPUT/summary.csv; a rerun skips cases done with the same model")
    segment.add_argument("--shard", metavar="I/N", help="with a batch: only the I-th of N equal shares of the cases "
                                                        "(a job array's task I of N)")
    segment.add_argument("-o", "--output", type=Path, help="output folder (default: <input name>_lungautoseg)")
    segment.add_argument("--model", type=Path, help="model package folder or zip (default: the bundled model)")
    segment.add_argument("--structures", help="comma-separated subset of the model's structures, e.g. Lung_R")
    segment.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    segment.add_argument("--series", help="SeriesInstanceUID, when the folder holds several CT series")
    segment.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar",
                         help="jsonl: one JSON object per line on stdout (for the Slicer module)")
    segment.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    segment.add_argument("--dicom-seg", action="store_true",
                         help="also a DICOM SEG beside the RTSTRUCT (DICOM input; needs highdicom)")
    segment.add_argument("--example", action="store_true", help="run on the embedded example CT")
    segment.add_argument("--review", action="store_true",
                         help="also write <name>_review.nrrd, where the model is unsure, and list where to look")
    segment.set_defaults(run=_segment)

    engine = commands.add_parser("engine", parents=[common],
                                 help="stay running for the Slicer module: one JSON request per line on stdin, "
                                      "segment's JSON lines per request on stdout; models stay loaded")
    engine.add_argument("--idle-exit", type=float, default=DEFAULT_IDLE_SECONDS, metavar="SECONDS",
                        help=f"exit after this long without a request (default {DEFAULT_IDLE_SECONDS:g})")
    engine.set_defaults(run=_engine)

    serve = commands.add_parser("serve", parents=[common], help="run as a DICOM node: receive CTs, send RTSTRUCTs")
    serve.add_argument("--config", type=Path, help="the node's TOML configuration")
    serve.add_argument("--example-config", action="store_true", help="print a configuration with every default")
    serve.set_defaults(run=_serve)
    node = commands.add_parser("node", parents=[common], help="the DICOM node's journal")
    node_commands = node.add_subparsers(dest="node_command", required=True)
    node_status = node_commands.add_parser("status", parents=[common], help="list the jobs and their states")
    node_status.add_argument("--config", type=Path, required=True)
    node_status.set_defaults(run=_node_status)

    info = commands.add_parser("info", parents=[common], help="print a model package's card (default: the bundled model)")
    info.add_argument("model", type=Path, nargs="?")
    info.set_defaults(run=_info)
    return parser


INTERNAL_ERROR = 3  # a bug, not the input's fault (bad input: 2)


@contextlib.contextmanager
def _libraries_quiet(debug: bool):
    """The tool speaks its own warnings, one line each; pydicom's and NumPy's (a 301-character
    PatientName, a header value out of its VR) are for developers: shown only with --debug."""
    if debug:
        yield
        return
    pydicom_log = logging.getLogger("pydicom")
    level = pydicom_log.level
    pydicom_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        pydicom_log.setLevel(level)


def _terminate(signum, frame):
    """SIGTERM as an interrupt, so every ``finally`` runs: staging folders and made folders go."""
    raise KeyboardInterrupt(f"{signal.Signals(signum).name} received", 128 + signum)


def main(argv=None) -> int:
    """The command; exit 0, 2 (bad input: one line naming it), 130/143 (interrupted: SIGINT /
    SIGTERM, nothing left behind) or 3 (an unexpected error: one line, the traceback with --debug)."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with _libraries_quiet(args.debug):
            return args.run(args)
    except InputError as error:
        print(f"lungautoseg: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        reason, code = (interrupt.args + (None, None))[:2] if interrupt.args else ("interrupted (Ctrl-C)", None)
        print(f"lungautoseg: cancelled: {reason}; nothing was written", file=sys.stderr)
        return code or 128 + signal.SIGINT
    except BrokenPipeError:  # the reader left (``lungautoseg inspect CT | head -1``): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 1
    except Exception as error:  # noqa: BLE001 - the one place every other error becomes one line
        subject = getattr(args, "input", None) or getattr(args, "model", None) or "the command"
        hint = "" if args.debug else " (run again with --debug for the details)"
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(f"lungautoseg: error: {subject}: unexpected {type(error).__name__}: {first}{hint}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return INTERNAL_ERROR
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def run() -> None:
    """The console script (and ``python -m``): ``main``, then exit without the final garbage
    collections, which walk torch's ~165k objects for 0.7 s after the work is done."""
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    run()
