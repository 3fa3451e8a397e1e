"""`lungautoseg segment` speed and memory on a full-thorax CT and on the embedded example.

The full-thorax CT is pyradiomics' lung2 (../shared/data) resampled to 512x512x130
(2.35 mm slices) and written as a DICOM series, the way a planning CT arrives. For each
input it prints (a) reading the CT alone, (b) `segment` end to end in a fresh process
(as ``lungautoseg segment`` runs), its peak RSS, the time per stage, and b/a; (c) a repeat
run through the warm engine process (``lungautoseg engine``, as the Slicer module runs it:
the first request starts it and loads the model, the next ones are timed; the CT exported as
Slicer exports it, uncompressed NRRD, and the .seg.nrrd and review map asked for, as the module
asks). (a) is timed
both ways: in a fresh process like (b) (Python start, imports, read), which is the ratio's
denominator, and inside a running process. The default (thoracic) package runs with all five
structures and with Lung_R alone (its first stage alone). Targets on a 2-core CPU: all five
<= 10 s and <= 2.5 GB; Lung_R alone no slower than lungs 2.1.0; b/a <= 5. Run:
    .venv/bin/python benchmarks/segment_benchmark.py [--device cpu|cuda] [--repeat 2]
"""
import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing"))

import thorax_phantom as tp  # noqa: E402
from LungAutoSegLib.cli import example_ct  # noqa: E402
from LungAutoSegLib.ct_reader import read_ct  # noqa: E402
from LungAutoSegLib.image_io import volume_from_sitk, volume_to_sitk  # noqa: E402
from LungAutoSegLib.model_package import bundled_package  # noqa: E402

LUNG2 = REPO.parent / "shared" / "data" / "real" / "pyradiomics_lung" / "lung2_image.nrrd"


def full_thorax_dicom(folder: Path) -> Path:
    image = sitk.ReadImage(str(LUNG2))
    size, spacing = np.array(image.GetSize()), np.array(image.GetSpacing())
    new_spacing = [spacing[0], spacing[1], spacing[2] * (size[2] - 1) / 129]
    resampled = sitk.Resample(image, [int(size[0]), int(size[1]), 130], sitk.Transform(), sitk.sitkLinear,
                              image.GetOrigin(), new_spacing, image.GetDirection(), -1024, sitk.sitkInt16)
    tp.write_ct_series(volume_from_sitk(resampled), folder, "BENCH-512", generate_uid())
    return folder


def read_seconds(source: Path, repeat: int) -> tuple[float, float]:
    """Best of ``repeat``: reading in a fresh process, and inside this one."""
    fresh = inside = float("inf")
    command = [sys.executable, "-c", f"from LungAutoSegLib.ct_reader import read_ct; read_ct({str(source)!r})"]
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(command, check=True)
        fresh = min(fresh, time.perf_counter() - started)
        started = time.perf_counter()
        read_ct(source)
        inside = min(inside, time.perf_counter() - started)
    return fresh, inside


def segment_run(source: Path, output: Path, device: str, structures: str | None) -> tuple[float, float, dict]:
    """Wall seconds, peak RSS (GB) of the child processes so far, and the run's report."""
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).with_name("lungautoseg")), "segment", str(source), "-o", str(output),
                    "--device", device, "--progress", "none", "--overwrite",
                    *(["--structures", structures] if structures else [])], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # kB on Linux
    report = json.loads(next(output.glob("*_report.json")).read_text())
    return seconds, peak_gb, report


def bench(label: str, source: Path, work: Path, device: str, repeat: int, structures: str | None = None) -> None:
    a, a_inside = read_seconds(source, repeat)
    runs = [segment_run(source, work / f"out-{label}", device, structures) for _ in range(repeat)]
    b, peak, report = min(runs, key=lambda run: run[0])
    stages = ", ".join(f"{k} {v:.2f}" for k, v in report["seconds"].items())
    print(f"{label}: {report['ct']['size_ijk']} voxels at {report['ct']['spacing_mm']} mm")
    print(f"  (a) read CT only:        {a:6.2f} s  (fresh process; {a_inside:.2f} s inside a running one)")
    print(f"  (b) segment end to end:  {b:6.2f} s  (process start + import included; best of {repeat})")
    print(f"  peak RSS (max of runs):  {peak:6.2f} GB")
    print(f"  stages (s, in process):  {stages}")
    print(f"  b/a:                     {b / a:6.1f}  ({b / a_inside:.1f} against the in-process read)")
    warm, first = warm_seconds(source, work / f"warm-{label}", device, repeat, structures)
    print(f"  (c) warm engine repeat:  {warm:6.2f} s  (request to answer as the module asks, best of {repeat}; "
          f"its first request {first:.2f} s)")
    print("  " + ", ".join(f"{name} {facts['volume_ml']} ml" for name, facts in report["structures"].items()))


def warm_seconds(source: Path, output: Path, device: str, repeat: int, structures: str | None) -> tuple[float, float]:
    """Best wall seconds of ``repeat`` requests to one warm engine after its first; that first's.
    As the module asks: the CT as Slicer exports it (uncompressed NRRD), the review map, and only
    the files the module loads."""
    from LungAutoSegLib.engine_process import EngineJob, WarmEngine

    exported = output.with_name(output.name + "-input.nrrd")
    sitk.WriteImage(volume_to_sitk(read_ct(source).volume), str(exported), False)
    engine, seconds = WarmEngine(), []
    try:
        for _ in range(repeat + 1):
            job = EngineJob()
            request = {**job.request(structures=structures.split(",") if structures else None, device=device,
                                     review=True, files=["segmentation", "review"]),
                       "input": str(exported), "output": str(output), "overwrite": True}
            started = time.perf_counter()
            outcome = engine.run(job, request)
            seconds.append(time.perf_counter() - started)
            job.cleanup()
            if outcome["type"] != "result":
                raise SystemExit(f"warm engine: {outcome['message']}")
    finally:
        engine.close()
    return min(seconds[1:]), seconds[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        package = bundled_package()
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file()) / 1024**2
        print(f"default package {package.name}: {size:.1f} MB")
        thorax = full_thorax_dicom(work / "dicom")
        bench("full thorax (DICOM), all structures", thorax, work, args.device, args.repeat)
        bench("full thorax (DICOM), Lung_R alone", thorax, work, args.device, args.repeat, "Lung_R")
        bench("embedded example (NRRD), all structures", example_ct(), work, args.device, args.repeat)


if __name__ == "__main__":
    main()
