"""The DICOM node's latency and batch throughput (issue 21).

(1) Node latency on the 512x512x130 CT (segment_benchmark's): from storescu's last C-STORE
answered to the RTSTRUCT stored at storescp, with ``series_complete_seconds`` 2 (the wait for
the series to be complete is part of it, and printed apart). Then the spool's size after
``--series`` more series with retention on (keep_days 0).
(2) Batch throughput: ``--cases`` CTs (each the 512 CT under its own UIDs) by one
``lungautoseg segment --batch`` against as many separate ``lungautoseg segment`` calls.
Run (DCMTK needed):
    .venv/bin/python benchmarks/node_benchmark.py [--cases 10] [--series 10]
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "Testing"))
sys.path.insert(0, str(REPO / "benchmarks"))

from node_harness import Node, Tps, storescu, wait_for  # noqa: E402
from segment_benchmark import full_thorax_dicom  # noqa: E402

from LungAutoSegLib.ct_reader import read_ct  # noqa: E402

COMPLETE_SECONDS = 2


def node_latency(work: Path, series: int) -> None:
    tps = Tps(work / "tps").start()
    node = Node(work / "node", tps.port, series_complete_seconds=COMPLETE_SECONDS).start()
    try:
        folder = full_thorax_dicom(work / "ct")
        uid = read_ct(folder).dicom.datasets[0].SeriesInstanceUID
        started = time.perf_counter()
        assert storescu(node, folder).returncode == 0
        sent = time.perf_counter()
        wait_for(lambda: node.state(uid) == "sent", 600, "the RTSTRUCT")
        latency = time.perf_counter() - sent
        print(f"sending 130 slices by storescu: {sent - started:.2f} s")
        print(f"node latency, last C-STORE answered -> RTSTRUCT at the destination: {latency:.2f} s "
              f"(of which {COMPLETE_SECONDS} s waiting for the series to be complete: {latency - COMPLETE_SECONDS:.2f} s "
              f"of work)")
        uids = [uid]
        for n in range(series):
            more = full_thorax_dicom(work / f"ct{n}")
            uids.append(read_ct(more).dicom.datasets[0].SeriesInstanceUID)
            assert storescu(node, more).returncode == 0
        wait_for(lambda: all(node.state(u) == "sent" for u in uids), 1800, "every RTSTRUCT")
        spool = node.root / "spool"
        size = sum(p.stat().st_size for p in spool.rglob("*") if p.is_file())
        ct_size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"spool after {len(uids)} series with keep_days 0: {size / 1e6:.2f} MB "
              f"(one CT is {ct_size / 1e6:.1f} MB); RTSTRUCTs at the destination: {len(tps.rtstructs())}")
    finally:
        node.stop()
        tps.stop()


def batch_throughput(work: Path, cases: int) -> None:
    root = work / "cohort"
    for n in range(cases):
        full_thorax_dicom(root / f"case{n:02d}")
    lungautoseg = str(Path(sys.executable).with_name("lungautoseg"))
    started = time.perf_counter()
    subprocess.run([lungautoseg, "segment", "--batch", str(root), "-o", str(work / "batch"), "--progress", "none",
                    "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
    batch = time.perf_counter() - started
    started = time.perf_counter()
    for n in range(cases):
        subprocess.run([lungautoseg, "segment", str(root / f"case{n:02d}"), "-o", str(work / f"single{n:02d}"),
                        "--progress", "none", "--device", "cpu"], check=True, stdout=subprocess.DEVNULL)
    single = time.perf_counter() - started
    print(f"batch of {cases}: {batch:.1f} s ({60 * cases / batch:.1f} cases/min); {cases} separate calls: "
          f"{single:.1f} s ({60 * cases / single:.1f} cases/min); ratio {single / batch:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=10)
    parser.add_argument("--series", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="lungautoseg-node-bench-"))
    try:
        node_latency(work / "node", args.series)
        batch_throughput(work / "batch", args.cases)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
