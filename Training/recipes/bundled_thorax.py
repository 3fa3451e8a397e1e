"""Build the bundled thoracic package (Lung_R, Lung_L, Heart, Esophagus, SpinalCord): data, leave-one-out, final.

    python Training/recipes/bundled_thorax.py --work /tmp/thorax [--stage all|data|loo|score|final]

A two-stage cascade (``LungAutoSegLib.cascade``). Stage 1 is lungs 2.1.0 unchanged (its own
recipe, bundled_lungs.py; it never saw LUNG1-004 or -009). Stage 2 is trained here
(bundled_thorax.yaml): Heart, Esophagus and SpinalCord at 1.5 mm in-plane, inside the stage's
crop (the box around the lungs, the whole scan in height).

Data: the six NSCLC-Radiomics planning CTs through the product's own ``export`` (GTVs cut out
and ignored with a margin; LUNG1-004 and -009 have no Heart, which stays unlabelled, not
background: the trainer's marginal loss), each cut to the stage's crop around its reference lungs.
Stages: ``loo`` trains stage 2 once per patient with that patient held out (fixed epochs, no
validation: the held-out patient chooses nothing); ``score`` puts each held-out stage 2 behind
lungs 2.1.0 and scores the whole package on the held-out patient's own CT grid, outside GTV +
5 mm, only the structures it has; ``final`` trains on all six and writes the package with its
card into LungAutoSeg/Resources/Models. Each stage resumes by re-running it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
CONFIG = Path(__file__).with_name("bundled_thorax.yaml")
MODELS = REPO / "LungAutoSeg" / "Resources" / "Models"
NSCLC = SHARED / "real" / "nsclc_radiomics_lung1"
LUNGS = MODELS / "lungs-2.1.0"
ALL = ["Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord"]
STAGE2 = yaml.safe_load(CONFIG.read_text())["data"]["structures"]
# Around the lungs; the whole scan in height: these clinics contour the cord to the scan's ends and
# the esophagus up into the neck. Margins from the six CTs: the heart reaches 6 mm in front of the
# lungs, the cord's back lies 4-19 mm inside their posterior extent.
CROP = {"around": ["Lung_R", "Lung_L"], "margin_mm": [10.0, 20.0, None]}
REPEAT = 8  # how often an epoch sees each training patient
VERSION = "1.0.0"  # the thoracic package's


def export_expert(data: Path) -> list[dict]:
    """The six planning CTs through the product's own export, every structure requested."""
    from lungautoseg_train.export import Exclusion, run_export

    report = run_export(NSCLC, ALL, data / "nsclc", exclusion=Exclusion(("GTV*",)), progress=False)
    if report["summary"]["exported"] != 6:
        raise SystemExit(f"expert export incomplete: {report['summary']}")
    return sorted(report["cases"], key=lambda c: c["case"])


def write_data(data: Path) -> None:
    """Each case cut to stage 2's crop around its reference lungs, stage 2's labels 1..3."""
    from LungAutoSegLib.cascade import Crop, cropped
    from LungAutoSegLib.image_io import read_volume, write_volume

    crop = Crop.from_dict(CROP)
    out = data / "mediastinum"
    for folder in ("images", "labels", "ignore"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    rows = ["case,patient,image,label,fold,ignore,labelled"]
    for fold, case in enumerate(export_expert(data)):
        name = case["case"]
        ct, label = read_volume(data / "nsclc" / case["image"]), read_volume(data / "nsclc" / case["label"])
        region = crop.region(np.isin(label.array, [ALL.index(n) + 1 for n in crop.around]), ct)
        stage_label = np.zeros(label.array.shape, np.uint8)
        for value, structure in enumerate(STAGE2, start=1):
            stage_label[label.array == ALL.index(structure) + 1] = value
        write_volume(cropped(ct, region), out / "images" / f"{name}.nii.gz")
        write_volume(cropped(label.with_array(stage_label), region), out / "labels" / f"{name}.nii.gz")
        write_volume(cropped(read_volume(data / "nsclc" / case["ignore"]), region), out / "ignore" / f"{name}.nii.gz")
        labelled = " ".join(s for s in STAGE2 if s in case["labelled"])
        rows.append(f"{name},{name},images/{name}.nii.gz,labels/{name}.nii.gz,{fold},ignore/{name}.nii.gz,{labelled}")
        print(f"{name}: crop {[(s.start, s.stop) for s in region]} of {ct.array.shape}, labelled {labelled}")
    (out / "dataset.csv").write_text("\n".join(rows) + "\n")


def cases(data: Path) -> list[str]:
    return [r.split(",")[0] for r in (data / "mediastinum" / "dataset.csv").read_text().splitlines()[1:]]


def training_csv(data: Path, exclude: str | None = None) -> Path:
    header, *rows = (data / "mediastinum" / "dataset.csv").read_text().splitlines()
    chosen = [r for r in rows if r.split(",")[0] != exclude for _ in range(REPEAT)]
    path = data / "mediastinum" / (f"train_without_{exclude}.csv" if exclude else "train_all.csv")
    path.write_text("\n".join([header, *chosen]) + "\n")
    return path


def train(work: Path, name: str, csv: Path, settings: tuple[str, ...] = ()) -> Path:
    """One run of ``lungautoseg-train train`` from the lungs' weights; a finished run is kept, a
    killed one resumed. ``settings``: more ``key=value`` config overrides (``--set``)."""
    output = work / name
    if not (output / "package").is_dir():
        resume = ["--resume"] if (output / "checkpoints" / "last.pt").is_file() else []
        command = [sys.executable, "-m", "lungautoseg_train.cli", "train", "--config", str(CONFIG), "--quiet",
                   f"output_dir={output}", f"data.cache_dir={work / 'cache'}", f"data.csv={csv}", "data.fold=null",
                   f"init_weights={LUNGS / 'model.safetensors'}", *settings, *resume]
        subprocess.run(command, check=True)
    return output


def leave_one_out(work: Path, settings: tuple[str, ...] = ()) -> None:
    for case in cases(work / "data"):
        train(work, f"loo_{case}", training_csv(work / "data", case), settings)


# A reference error the data README documents, mended before scoring: LUNG1-004's Lung-Right takes
# in about 53 ml of the liver dome on six slices. The soft tissue (> -300 HU) of that contour in one
# piece over 40 ml is that dome (57 ml, slices 39-44); it is ignored there, never learnt (stage 1
# never saw LUNG1-004). No other lung of the six has such a piece over 33 ml.
REFERENCE_ERRORS = {"LUNG1-004": ("Lung_R", -300.0, 40.0)}


def mended_ignore(data: Path, case: dict) -> str:
    """The case's ignore mask, with a documented reference error added (as a path in data/nsclc)."""
    if case["case"] not in REFERENCE_ERRORS:
        return case["ignore"]
    from scipy import ndimage

    from LungAutoSegLib.image_io import read_volume, write_volume

    structure, hu, min_ml = REFERENCE_ERRORS[case["case"]]
    ct, label = read_volume(data / "nsclc" / case["image"]), read_volume(data / "nsclc" / case["label"])
    ignore = read_volume(data / "nsclc" / case["ignore"])
    pieces, _ = ndimage.label((label.array == ALL.index(structure) + 1) & (ct.array > hu))
    sizes = np.bincount(pieces.ravel()) * float(np.prod(ct.spacing)) / 1000
    error = np.isin(pieces, np.flatnonzero(sizes[1:] > min_ml) + 1)
    print(f"{case['case']}: {structure} reference error ignored: {float(sizes[1:][sizes[1:] > min_ml].sum()):.1f} ml")
    mended = f"ignore_mended/{case['case']}.nii.gz"
    (data / "nsclc" / "ignore_mended").mkdir(exist_ok=True)
    write_volume(ignore.with_array(((ignore.array > 0) | error).astype(np.uint8)), data / "nsclc" / mended)
    return mended


def scoring_csv(data: Path) -> Path:
    """The six full CTs, every structure, each case's ignore mask (mended where documented)."""
    header, *rows = (data / "nsclc" / "dataset.csv").read_text().splitlines()
    report = {c["case"]: c for c in json.loads((data / "nsclc" / "export_report.json").read_text())["cases"]}
    columns = header.split(",")
    mended = []
    for row in rows:
        values = dict(zip(columns, row.split(",")))
        values["ignore"] = mended_ignore(data, report[values["case"]])
        mended.append(",".join(values[c] for c in columns))
    path = data / "nsclc" / "scoring.csv"
    path.write_text("\n".join([header, *mended]) + "\n")
    return path


def thorax_package(stage2: Path, out: Path, card: str | None = None, metrics: dict | None = None) -> Path:
    """The cascade: lungs 2.1.0, then ``stage2`` inside the crop around the lungs."""
    from LungAutoSegLib.cascade import Crop
    from LungAutoSegLib.model_package import write_cascade
    from LungAutoSegLib.structures import structure_entries

    manifest = {"name": "thorax", "version": VERSION,
                "description": "Lung_R, Lung_L (MONAI UNet, 2.5 mm), then Heart, Esophagus, SpinalCord (MONAI UNet, "
                               "1.5 mm in-plane, in the box around the lungs) on CT",
                "structures": structure_entries(ALL), "metrics": metrics or {},
                "provenance": {"recipe": "Training/recipes/bundled_thorax.py", "stages": [LUNGS.name, stage2.name]}}
    return write_cascade(out, manifest, [(LUNGS, None), (stage2, Crop.from_dict(CROP))], overwrite=True,
                         extra_files={"MODEL_CARD.md": card} if card else None)


def stage2_package(work: Path, run: str) -> Path:
    """The run's stage 2 packaged with the recipe's postprocessing of today: that does not touch
    the weights, so a fold trained before a postprocessing change is packaged again, not retrained."""
    from lungautoseg_train.package import package_checkpoint

    postprocessing = yaml.safe_load(CONFIG.read_text()).get("postprocessing", {})
    settings = [f"postprocessing.{key}={json.dumps(value)}" for key, value in postprocessing.items()]
    return package_checkpoint(work / run / "checkpoints" / "best.pt", work / run / "packaged", overwrite=True,
                              settings=settings)


def score(work: Path) -> list[dict]:
    """Each held-out patient by the cascade whose stage 2 never saw it; its lungs by lungs 2.1.0."""
    from lungautoseg_train.data import read_dataset
    from lungautoseg_train.evaluate import evaluate_records

    csv = scoring_csv(work / "data")
    records = {r.case: r for r in read_dataset(csv)}
    rows = []
    for case in cases(work / "data"):
        if not (work / f"loo_{case}" / "package").is_dir():
            print(f"{case}: its leave-one-out run has not finished: not scored")
            continue
        package = thorax_package(stage2_package(work, f"loo_{case}"), work / "loo_packages" / case)
        for row in evaluate_records(package, [records[case]], csv, device="cpu")["cases"]:
            rows.append({**row, "lungs_trained_on_it": row["structure"].startswith("Lung") and case in LUNGS_TRAINED_ON})
            print(json.dumps(rows[-1]))
    (work / "loo.json").write_text(json.dumps(rows, indent=2))
    return rows


# lungs 2.1.0 was trained on these; their lung rows in the table come from its own leave-one-out
# models (its card), not from 2.1.0 itself.
LUNGS_TRAINED_ON = ("LUNG1-005", "LUNG1-006", "LUNG1-008", "LUNG1-010")
LUNG_CARD_COLUMNS = ("dice", "hd95_mm", "msd_mm", "surface_dice_2mm", "volume_error_pct")


def lungs_card_rows() -> dict[tuple[str, str], dict]:
    """lungs 2.1.0's leave-one-out rows (its MODEL_CARD.md table), by (case, structure)."""
    rows = {}
    for line in (LUNGS / "MODEL_CARD.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 12 and cells[0].startswith("LUNG1-"):
            rows[cells[0], cells[1]] = {k: float(v) for k, v in zip(LUNG_CARD_COLUMNS, cells[2:7])}
    return rows


def loo_rows(work: Path) -> list[dict]:
    """loo.json with the lungs that stage 1 saw replaced by its own leave-one-out scores."""
    from_card = lungs_card_rows()
    return [{**row, **from_card[row["case"], row["structure"]], "from": "lungs 2.1.0 card"}
            if row["lungs_trained_on_it"] else {**row, "from": "this recipe"}
            for row in json.loads((work / "loo.json").read_text())]


# The AAPM 2017 challenge winner (Yang et al., Med Phys 2018; 36 training CTs): Dice, HD95 mm.
CHALLENGE = {"Lung_R": (0.97, 4.7), "Lung_L": (0.97, 2.9), "Heart": (0.93, 5.8), "Esophagus": (0.72, 7.3),
             "SpinalCord": (0.88, 2.0)}
COMMON = ("LUNG1-004", "LUNG1-006", "LUNG1-008", "LUNG1-009", "LUNG1-010")  # lung targets; LUNG1-005 apart


def loo_table(rows: list[dict]) -> str:
    lines = ["| case | structure | Dice | HD95 mm | MSD mm | surface Dice 2 mm | volume error % | scored by |",
             "|" + " --- |" * 8]
    for r in sorted(rows, key=lambda r: (ALL.index(r["structure"]), r["case"])):
        lines.append(f"| {r['case']} | {r['structure']} | {r['dice']:.3f} | {r['hd95_mm']:.1f} | {r['msd_mm']:.2f} "
                     f"| {r['surface_dice_2mm']:.3f} | {r['volume_error_pct']:+.1f} | {r['from']} |")
    lines += ["", "| structure | mean Dice | mean HD95 mm | min Dice | cases | challenge winner Dice | HD95 mm |",
              "|" + " --- |" * 7]
    for structure in ALL:
        chosen = [r for r in rows if r["structure"] == structure and (structure not in ("Lung_R", "Lung_L")
                                                                       or r["case"] in COMMON)]
        dice, hd = [r["dice"] for r in chosen], [r["hd95_mm"] for r in chosen]
        label = structure + (" (LUNG1-005 apart)" if structure.startswith("Lung") else "")
        lines.append(f"| {label} | {np.mean(dice):.3f} | {np.mean(hd):.1f} | {min(dice):.3f} | {len(chosen)} "
                     f"| {CHALLENGE[structure][0]:.2f} | {CHALLENGE[structure][1]:.1f} |")
    return "\n".join(lines)


def write_bundled(work: Path) -> Path:
    rows = loo_rows(work)
    card = Path(__file__).with_name("bundled_thorax_card.md").read_text().replace("{LOO_TABLE}", loo_table(rows))
    scores = {f"loo_{r['case']}_{r['structure']}_dice": r["dice"] for r in rows}
    folder = thorax_package(stage2_package(work, "final"), MODELS, card, {"leave_one_out_dice": scores})
    print(f"bundled model: {folder}")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--stage", choices=["all", "data", "loo", "score", "final"], default="all")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a training setting for every run, e.g. workers=12 on a GPU machine with "
                             "many cores (repeatable)")
    args = parser.parse_args(argv)
    work = args.work.resolve()
    if args.stage in ("all", "data"):
        write_data(work / "data")
    if args.stage in ("all", "loo"):
        leave_one_out(work, tuple(args.settings))
    if args.stage in ("all", "score"):
        score(work)
    if args.stage in ("all", "final"):
        train(work, "final", training_csv(work / "data"), tuple(args.settings))
        write_bundled(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
