"""``lungautoseg-train``: the training pipeline's command line."""
from __future__ import annotations

import argparse
import json
import sys

from LungAutoSegLib.errors import InputError

from .export import IGNORE_MARGIN_MM


def _split_rois(values: list[str]) -> list[str]:
    rois = [name.strip() for value in values for name in value.split(",") if name.strip()]
    return list(dict.fromkeys(rois))


def _export(args) -> int:
    from .export import Exclusion, run_export

    exclusion = Exclusion(tuple(_split_rois(args.exclude_roi or [])), args.ignore_margin_mm)
    report = run_export(args.dicom_root, _split_rois(args.roi), args.out, aliases_file=args.aliases,
                        folds=args.folds, seed=args.seed, workers=args.workers,
                        progress=not args.quiet, exclusion=exclusion)
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
          f"run; {s['partially_labelled']} partially labelled), {s['skipped']} skipped, {s['failed']} failed; "
          f"{s['unreadable_files']} non-DICOM "
          f"files ignored. Report: {args.out / 'export_report.json'}")
    return 1 if s["failed"] or s["skipped"] else 0  # a script must notice a case left out


def _train(args) -> int:
    from .config import load_config
    from .train import train

    summary = train(load_config(args.config, args.overrides), resume=args.resume, wandb_mode=args.wandb,
                    progress=not args.quiet)
    if "package" in summary:
        print(json.dumps(summary, indent=2))
    return 0


def _evaluate(args) -> int:
    from .evaluate import run_evaluate

    evaluation = run_evaluate(args.model, args.data, args.out, split=args.split, device=args.device,
                              wandb_mode=args.wandb, overwrite=args.overwrite, progress=not args.quiet)
    print(f"{evaluation['model']} on {len({r['case'] for r in evaluation['cases']})} cases "
          f"({evaluation['implementation']}):")
    for name, metrics in evaluation["mean"].items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in metrics.items()))
    print(f"per case: {args.out / 'evaluation.csv'}")
    return 0


def _tune_edge(args) -> int:
    from .edge import run_tune_edge

    result = run_tune_edge(args.model, args.data, split=args.split, candidates=args.candidates, device=args.device,
                           out=args.out, progress=not args.quiet)
    print(f"{result['model']} on {len(result['cases'])} cases: mean Dice by edge_hu")
    for edge, score in result["mean_dice"].items():
        print(f"  {'off' if edge == 'None' else edge + ' HU'}: {score:.4f}")
    best = result["best_edge_hu"]
    print("best: the edge off" if best is None else
          f"best: {best:g} HU; package with it: lungautoseg-train package --set postprocessing.edge_hu={best:g}")
    return 0


def _candidates(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"candidates must be HU values separated by commas, got {text!r}") from None


def _package(args) -> int:
    from .package import package_checkpoint

    folder = package_checkpoint(args.checkpoint, args.out, overwrite=args.overwrite, card=args.card,
                                make_zip=args.zip, settings=args.set)
    print(folder)
    return 0


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
    export.add_argument("--exclude-roi", action="append", metavar="PATTERN",
                        help="tumour ROIs (glob, case-insensitive, e.g. 'GTV*'; repeat or comma-separate) cut "
                             "out of every structure and written, with a margin, as ignore/<case>.nii.gz")
    export.add_argument("--ignore-margin-mm", type=float, default=IGNORE_MARGIN_MM,
                        help=f"margin around the excluded ROIs that training and evaluation ignore (default {IGNORE_MARGIN_MM:g})")
    export.add_argument("--folds", type=int, default=5, help="patient-level folds (default 5)")
    export.add_argument("--seed", type=int, default=0, help="seed of the fold assignment")
    export.add_argument("--workers", type=int, help="parallel cases (default: all cores)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(run=_export)

    wandb_modes = ["online", "offline", "disabled"]
    train = commands.add_parser("train", help="train a network (DDP under torchrun); resumes with --resume")
    train.add_argument("--config", type=Path, required=True, help="YAML config (see Training/configs/)")
    train.add_argument("overrides", nargs="*", metavar="key.sub=value", help="config overrides (W&B sweeps)")
    train.add_argument("--resume", action="store_true", help="continue the run in output_dir from its last checkpoint")
    train.add_argument("--wandb", choices=wandb_modes, help="default: online when an API key is configured, "
                                                            "else offline")
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(run=_train)

    evaluate = commands.add_parser("evaluate", help="score a model package on dataset cases, original CT grid")
    evaluate.add_argument("--model", type=Path, required=True, help="model package folder or zip")
    evaluate.add_argument("--data", type=Path, required=True, help="dataset.csv")
    evaluate.add_argument("--split", default="all",
                          help="all (default), a fold number, or a value of the CSV's split column (e.g. test)")
    evaluate.add_argument("--out", type=Path, required=True, help="folder for evaluation.csv and .json")
    evaluate.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    evaluate.add_argument("--wandb", choices=wandb_modes)
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.add_argument("--quiet", action="store_true")
    evaluate.set_defaults(run=_evaluate)

    tune = commands.add_parser("tune-edge", help="choose edge_hu (the CT-grid edge) on contoured cases")
    tune.add_argument("--model", type=Path, required=True, help="model package folder or zip")
    tune.add_argument("--data", type=Path, required=True, help="dataset.csv of cases contoured to your convention")
    tune.add_argument("--split", default="all", help="as for evaluate")
    tune.add_argument("--candidates", type=_candidates, help="HU values, comma-separated, after '=' "
                      "(--candidates=-300,-250); default -400 to -100 in steps of 50")
    tune.add_argument("--out", type=Path, help="write every score as JSON")
    tune.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    tune.add_argument("--quiet", action="store_true")
    tune.set_defaults(run=_tune_edge)

    package = commands.add_parser("package", help="checkpoint -> model package <name>-<version>/")
    package.add_argument("--checkpoint", type=Path, required=True)
    package.add_argument("--out", type=Path, required=True)
    package.add_argument("--card", type=Path, help="model card (Markdown) to ship; default: generated")
    package.add_argument("--zip", action="store_true", help="also write <name>-<version>.zip")
    package.add_argument("--overwrite", action="store_true")
    package.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="package with a changed name, version or postprocessing "
                              "(e.g. postprocessing.edge_hu=-250); repeatable")
    package.set_defaults(run=_package)
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
