"""``lungautoseg``: the engine's command line (``inspect`` now; ``segment`` comes with inference)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .errors import InputError
from .image_io import read_ct


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
    volume = read_ct(args.input, args.series)
    print(json.dumps({"input": str(args.input), **describe(volume)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lungautoseg", description="LungAutoSeg engine")
    commands = parser.add_subparsers(dest="command", required=True)
    inspect = commands.add_parser("inspect", help="read a CT (DICOM folder, NRRD, NIfTI, MHA), check it, "
                                                  "print its geometry")
    inspect.add_argument("input", type=Path)
    inspect.add_argument("--series", help="SeriesInstanceUID, when the folder holds several CT series")
    inspect.set_defaults(run=_inspect)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        print(f"lungautoseg: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
