"""Is this segmentation believable? Checks after every run, so a result is never silently wrong.

A U-Net labels whatever looks most like lung: on a head CT, an abdomen or a water phantom
it returns confident "lungs" made of air. These checks compare the result with the CT
around it and with anatomy, and each failure becomes one warning in the report, the CLI
output and the Slicer module. Thresholds were set on the real CTs of ../shared/data (full
chest CTs: lungs 15-36% of the body on their slices, lung extent 200-275 mm, bone 2.7-9%
of the body; the abdomen with lung bases: 3-4%) with wide margins; see the README.
"""
from __future__ import annotations

import numpy as np

from .volume import Volume

BODY_HU = -500.0          # tissue; aerated lung is below
BONE_HU = 300.0
AERATED_HU = -500.0       # a lung's mean must lie below this
MIN_BONE_FRACTION = 0.005  # of the body: a patient's chest always shows ribs and spine
MIN_LUNG_FRACTION = 0.08   # lungs over (lungs + body) on the slices that hold lungs
MIN_EXTENT_MM = 60.0       # lungs over less than this, in a scan longer than LONG_SCAN_MM
LONG_SCAN_MM = 120.0
CUT_FRACTION = 0.25        # a lung whose end slice holds this much of its largest cross-section is cut
LUNG_ML = (250.0, 5500.0)  # one adult lung, fully covered
MAX_ASYMMETRY = 2.5        # larger over smaller lung volume
MAX_COMPONENTS = 2


def _coverage(name: str, area: np.ndarray) -> list[str]:
    notes = []
    for index, end in ((0, "first"), (len(area) - 1, "last")):
        fraction = area[index] / area.max()
        if fraction >= CUT_FRACTION:
            notes.append(f"incomplete coverage: the scan's {end} slice cuts {name} ({fraction:.0%} of its largest "
                         f"cross-section): part of the lung is probably outside the scan")
    return notes


def _structure(name: str, mask: np.ndarray, ct: Volume, components: int) -> tuple[list[str], float, bool]:
    """Warnings for one lung, its volume (ml), and whether the scan cuts it."""
    if not mask.any():
        return [f"{name} not found: no lung in this CT, or not a chest CT"], 0.0, False
    volume_ml = float(mask.sum()) * float(np.prod(ct.spacing)) / 1000
    area = mask.sum(axis=(1, 2))  # voxels per slice
    notes = _coverage(name, area)
    cut = bool(notes)
    mean_hu = float(ct.array[mask].mean())
    if mean_hu > AERATED_HU:
        notes.append(f"{name} is not aerated (mean {mean_hu:.0f} HU): not lung, or a collapsed or consolidated lung")
    if not cut and not LUNG_ML[0] <= volume_ml <= LUNG_ML[1]:
        notes.append(f"{name} volume {volume_ml:.3g} ml is implausible for an adult lung "
                     f"({LUNG_ML[0]:.0f}-{LUNG_ML[1]:.0f} ml)")
    if components > MAX_COMPONENTS:
        notes.append(f"{name} is in {components} pieces")
    return notes, volume_ml, cut


def _body(ct: Volume, lungs: np.ndarray) -> list[str]:
    """Is the body around the lungs a chest: bone present, lungs a fair share of it, long enough?"""
    notes = []
    tissue = ct.array > BODY_HU
    bone = float((ct.array > BONE_HU).sum()) / max(int(tissue.sum()), 1)
    if bone < MIN_BONE_FRACTION:
        notes.append(f"almost no bone in the scan ({bone:.1%} of the body): a phantom or an object, "
                     "not a patient's chest")
    slices = np.flatnonzero(lungs.any(axis=(1, 2)))
    if not len(slices):
        return notes
    block = slice(slices[0], slices[-1] + 1)
    share = float(lungs[block].sum()) / max(int((lungs[block] | tissue[block]).sum()), 1)
    if share < MIN_LUNG_FRACTION:
        notes.append(f"the lungs fill only {share:.0%} of the body on their slices (a chest: 15-40%): "
                     "probably not a chest CT")
    step = float(ct.spacing[2])
    extent, scan = (slices[-1] - slices[0] + 1) * step, len(ct.array) * step
    if scan > LONG_SCAN_MM and extent < MIN_EXTENT_MM:
        notes.append(f"lungs found over only {extent:.0f} mm of a {scan:.0f} mm scan: probably not a chest CT")
    return notes


def check(ct: Volume, lungs_by_name: dict[str, np.ndarray], components: dict[str, int]) -> list[str]:
    """Plausibility warnings for a lung segmentation: each lung's mask on ``ct``'s grid, by name."""
    warnings, volumes, cut = [], {}, False
    lungs = np.zeros(ct.array.shape, dtype=bool)
    for name, mask in lungs_by_name.items():
        lungs |= mask
        notes, volumes[name], was_cut = _structure(name, mask, ct, components.get(name, 0))
        warnings += notes
        cut |= was_cut
    warnings = _body(ct, lungs) + warnings  # what the scan is comes first, then each lung
    present = [v for v in volumes.values() if v > 0]
    if len(present) == 2 and not cut and max(present) / min(present) > MAX_ASYMMETRY:
        names = " and ".join(f"{n} {v:.0f} ml" for n, v in volumes.items())
        warnings.append(f"strongly asymmetric lungs ({names}): check for a wrong or missed lung")
    return warnings
