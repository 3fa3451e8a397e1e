"""Shared fixtures: phantom cases on disk, the shared real data, Dice."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import thorax_phantom as tp

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# The geometries every reader and writer is checked on (DESIGN.md): name -> grid arguments.
GEOMETRIES = {
    "square_axial": dict(shape_ijk=(96, 96, 20), spacing=(3.6, 3.6, 10.0), orientation="axial"),
    "nonsquare_unequal": dict(shape_ijk=(512, 384, 10), spacing=(0.7, 0.9, 20.0), orientation="axial"),
    "descending": dict(shape_ijk=(96, 80, 20), spacing=(3.6, 4.2, 10.0), orientation="axial"),
    "x_flipped": dict(shape_ijk=(96, 96, 20), spacing=(3.6, 3.6, 10.0), orientation="flipped"),
    "oblique": dict(shape_ijk=(100, 90, 22), spacing=(3.6, 3.8, 10.0), orientation="oblique"),
}


def shared_data(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared test data not found: {path}")
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * np.logical_and(a, b).sum() / total


def make_phantom(seed: int = 0, geometry: str = "square_axial") -> tp.Phantom:
    return tp.render(tp.make_anatomy(seed), tp.make_grid(**GEOMETRIES[geometry]))


@pytest.fixture
def write_phantom_case(tmp_path):
    """Write a phantom patient as DICOM CT + RTSTRUCT; returns (patient folder, phantom)."""

    def write(root: Path | None = None, seed: int = 0, geometry: str = "square_axial",
              patient_id: str | None = None, **kwargs):
        phantom = make_phantom(seed, geometry)
        folder = tp.write_case(root or tmp_path / "dicom", patient_id or f"PHANTOM-{seed:03d}",
                               phantom, descending=geometry == "descending", **kwargs)
        return folder, phantom

    return write
