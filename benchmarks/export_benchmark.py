"""Export speed: a 40-case phantom set with one worker, with all cores, and a re-run.

Prints seconds, the parallel speed-up and the re-run time. Run:
    .venv/bin/python benchmarks/export_benchmark.py [--cases 40] [--shape 128 128 48]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing"))

import thorax_phantom as tp  # noqa: E402
from lungautoseg_train.export import run_export  # noqa: E402


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=40)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 128, 48))
    parser.add_argument("--spacing", type=float, nargs=3, default=(2.8, 2.8, 5.0))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lungautoseg-bench-"))
    try:
        seconds, _ = timed(lambda: [
            tp.write_case(work / "dicom", f"P{n:03d}",
                          tp.render(tp.make_anatomy(n), tp.make_grid(args.shape, args.spacing)))
            for n in range(args.cases)])
        print(f"phantom set: {args.cases} cases of {args.shape} voxels written in {seconds:.1f} s")
        rois = ["Lung_R", "Lung_L", "Heart", "Esophagus", "SpinalCord"]
        one, _ = timed(run_export, work / "dicom", rois, work / "one", workers=1, progress=False)
        cores = os.cpu_count()
        many, report = timed(run_export, work / "dicom", rois, work / "all", workers=cores, progress=False)
        rerun, again = timed(run_export, work / "dicom", rois, work / "all", workers=cores, progress=False)
        pids = len({case["worker_pid"] for case in report["cases"]})
        print(f"export, 1 worker:        {one:6.1f} s ({one / args.cases:.2f} s/case)")
        print(f"export, {cores} workers:       {many:6.1f} s ({pids} worker processes did cases); "
              f"speed-up {one / many:.2f}x")
        print(f"re-run, nothing changed: {rerun:6.1f} s ({again['summary']['reused']} of "
              f"{args.cases} cases reused); {many / rerun:.0f}x faster than the export")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
