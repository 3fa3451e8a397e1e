"""``lungautoseg-train``: the training pipeline's command line."""
from __future__ import annotations

import argparse
import sys

from LungAutoSegLib.errors import InputError


def _split_rois(values: list[str]) -> list[str]:
    rois = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(rois))


def _export(args) -> int:
    from .export import run_export

    report = run_export(args.dicom_root, _split_rois(args.roi), args.out, aliases_file=args.aliases,
                        folds=args.folds, seed=args.seed, workers=args.workers,
                        progress=not args.quiet)
    for case in report["cases"]:
        if case["status"] != "exported":
            print(f"{case['case']}: {case['status']}: {case['reason']}")
            if case["recognised"]:
                names = ", ".join(f"'{n}' -> {s}" for n, s in case["recognised"].items())
                print(f"{case['case']}: ROI names recognised: {names}")
        for warning in case["warnings"]:
            print(f"{case['case']}: warning: {warning}")
    s = report["summary"]
    print(f"{s['exported']} of {s['cases']} cases exported ({s['reused']} up to date from an earlier "
          f"run), {s['skipped']} skipped, {s['failed']} failed; {s['unreadable_files']} non-DICOM "
          f"files ignored. Report: {args.out / 'export_report.json'}")
    return 1 if s["failed"] else 0


def build_parser() -> argparse.ArgumentParser:
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="lungautoseg-train", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser(
        "export", help="DICOM CT + RTSTRUCT -> images/, labels/ (NIfTI), dataset.csv, export_report.json")
    export.add_argument("--dicom-root", type=Path, required=True, help="folder of patients, any depth")
    export.add_argument("--roi", action="append", required=True,
                        help="structure to export (TG-263 name); repeat or comma-separate; "
                             "label value n is the n-th")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--aliases", type=Path, help='JSON {"Lung_R": ["my name", ...]} extending the alias table')
    export.add_argument("--folds", type=int, default=5, help="patient-level folds (default 5)")
    export.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    export.add_argument("--workers", type=int, help="parallel cases (default: all cores)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(run=_export)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"lungautoseg-train: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
