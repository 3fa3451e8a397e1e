"""`lungautoseg segment --review`: what the review map costs, and whether it points at the errors.

(a) Cost: `predict` with and without the review on the 512x512x130 benchmark CT (segment_benchmark's),
    in one process, best of --repeat, plus writing the map. Target: <= 1 s extra on a 2-core CPU.
(b) Capture: on each expert CT of ../shared/data/real/nsclc_radiomics_lung1 (exported here by the
    product's export, GTV cut out and ignored with its margin), the model's error voxels (its
    label != the clinic's, outside the ignore mask) and the share of them that lies in the 5% most
    doubtful voxels of the lungs' region (the box around prediction and reference, 10 mm wider)
    and of the whole CT. The model must not have seen the case: --model-per-case takes a path
    pattern with {case} for leave-one-patient-out packages; the default, lungs 1.0.0, never saw
    these CTs.
    .venv/bin/python benchmarks/review_benchmark.py [--model-per-case PATTERN] [--repeat 2]
"""
import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from segment_benchmark import full_thorax_dicom  # noqa: E402
from LungAutoSegLib.ct_reader import read_ct  # noqa: E402
from LungAutoSegLib.image_io import read_volume, write_volume  # noqa: E402
from LungAutoSegLib.inference import predict  # noqa: E402
from LungAutoSegLib.model_package import BUNDLED_MODELS, load_package  # noqa: E402

NSCLC = REPO.parent / "shared" / "data" / "real" / "nsclc_radiomics_lung1"
TOP = 0.05
MARGIN_MM = 10.0


def cost(repeat: int) -> None:
    with tempfile.TemporaryDirectory() as work:
        ct = read_ct(full_thorax_dicom(Path(work) / "ct")).volume
        package = load_package(None)
        network = package.load_network("cpu")
        plain = review = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            predict(ct, package, device="cpu", network=network)
            plain = min(plain, time.perf_counter() - started)
            started = time.perf_counter()
            result = predict(ct, package, device="cpu", network=network, with_review=True)
            write_volume(result.review.map, Path(work) / "review.nrrd")
            review = min(review, time.perf_counter() - started)
    print(f"(a) 512x512x130 CT: predict {plain:.2f} s, with review and its map written {review:.2f} s: "
          f"{review - plain:+.2f} s (target <= 1 s)")


def capture(pattern: str | None) -> None:
    from lungautoseg_train.export import Exclusion, run_export

    with tempfile.TemporaryDirectory() as work:
        report = run_export(NSCLC, ["Lung_R", "Lung_L"], Path(work), exclusion=Exclusion(("GTV*",)), progress=False)
        shares = []
        for case in sorted(report["cases"], key=lambda c: c["case"]):
            model = pattern.format(case=case["case"]) if pattern else BUNDLED_MODELS / "lungs-1.0.0"
            ct = read_volume(Path(work) / case["image"])
            result = predict(ct, load_package(model), device="cpu", with_review=True)
            reference = read_volume(Path(work) / case["label"]).array
            scored = read_volume(Path(work) / case["ignore"]).array == 0
            errors = (result.labels.array != reference) & scored
            doubt = result.review.map.array
            region = _region(result.labels.array > 0, reference > 0, ct.spacing)
            in_region = _top_share(errors, doubt, region & scored)
            whole = _top_share(errors, doubt, scored)
            shares.append((in_region, whole))
            print(f"(b) {case['case']}: {int(errors.sum())} error voxels; in the {100 * TOP:.0f}% most doubtful voxels "
                  f"of the lungs' region {100 * in_region:.1f}%, of the whole CT {100 * whole:.1f}%  ({model})")
        mean = np.mean(shares, axis=0)
        print(f"(b) mean: lungs' region {100 * mean[0]:.1f}%, whole CT {100 * mean[1]:.1f}%")


def _region(prediction: np.ndarray, reference: np.ndarray, spacing) -> np.ndarray:
    either = prediction | reference
    margin = [int(np.ceil(MARGIN_MM / s)) for s in np.asarray(spacing)[::-1]]  # (k, j, i)
    region = np.zeros_like(either)
    box = [np.flatnonzero(either.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    region[tuple(slice(max(0, b[0] - m), b[-1] + m + 1) for b, m in zip(box, margin))] = True
    return region


def _top_share(errors: np.ndarray, doubt: np.ndarray, where: np.ndarray) -> float:
    """The share of ``errors`` (inside ``where``) among the TOP most doubtful voxels of ``where``;
    ties at the cut are counted in by rank, so exactly TOP of the voxels are flagged."""
    values = doubt[where].astype(np.float64) + np.random.default_rng(0).random(int(where.sum())) * 1e-3
    flagged = np.zeros(values.shape, bool)
    flagged[np.argsort(values)[::-1][: int(round(TOP * values.size))]] = True
    wrong = errors[where]
    return float((wrong & flagged).sum() / max(wrong.sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-per-case", help="package path with {case}, e.g. runs/loo_{case}/package/lungs-2.0.0")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    cost(args.repeat)
    capture(args.model_per_case)


if __name__ == "__main__":
    main()
