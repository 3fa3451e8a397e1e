"""Is this segmentation believable? Checks after every run, so a result is never silently wrong.

A U-Net labels whatever looks most like lung: on a head CT, an abdomen or a water phantom
it returns confident "lungs" made of air. These checks compare the result with the CT
around it and with anatomy, and each failure becomes one warning in the report, the CLI
output and the Slicer module. Thresholds were set on the real CTs of ../shared/data (full
chest CTs: lungs 15-36% of the body on their slices, lung extent 200-275 mm, bone 2.7-9%
of the body; the abdomen with lung bases: 3-4%) with wide margins; see the README.

The organs at risk get the anatomy's own checks: a heart of an adult's size, a cord in one
piece that runs the lungs' length behind the esophagus and the heart, an esophagus in the
mediastinum (between the lungs), and every structure on its own side. Sides are decided
in patient coordinates (LPS: patient right is -x, from the CT's direction cosines), never
from array indices.
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
HEART_ML = (150.0, 1600.0)  # references here 528-872 ml; a child's heart to an enlarged one
CORD_SHORT_MM = 40.0       # the cord may end this far inside the lungs' extent (the six expert CTs: 0 mm)
MEDIASTINUM_MM = 40.0      # the esophagus's centre from the midline between the lungs (the experts: under 25 mm)
OVERLAP_SHARE = 0.05       # two stages claiming this share of the smaller structure is a conflict
OVERLAP_ML = 1.0


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


def _body(ct: Volume, tissue: np.ndarray, lungs: np.ndarray) -> list[str]:
    """Is the body (``tissue``) around the lungs a chest: bone present, lungs a fair share of
    it, long enough?"""
    notes = []
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


def check(ct: Volume, masks: dict[str, np.ndarray], components: dict[str, int],
          overlaps: dict[tuple[str, str], int] | None = None) -> list[str]:
    """Plausibility warnings for a segmentation: each structure's mask on ``ct``'s grid, by name;
    ``overlaps``: voxels two structures both claimed (a cascade's stages), by pair."""
    lungs = {n: m for n, m in masks.items() if n in ("Lung_R", "Lung_L")}
    body = ct.array > BODY_HU  # once: 0.1 s on a 512x512 CT
    warnings = _lungs(ct, body, lungs, components) if lungs else []
    centres = {n: ct.centroid_lps(m) for n, m in masks.items() if m.any()}
    warnings += _sides(ct, body, masks, centres)
    if "Heart" in masks:
        warnings += _heart(ct, masks["Heart"])
    if "SpinalCord" in masks:
        warnings += _cord(ct, masks, centres, components.get("SpinalCord", 0))
    if "Esophagus" in centres and {"Lung_R", "Lung_L"} <= set(centres):
        warnings += _esophagus(centres)
    return warnings + _overlaps(ct, masks, overlaps or {})


def _lungs(ct: Volume, body: np.ndarray, lungs_by_name: dict[str, np.ndarray], components: dict[str, int]) -> list[str]:
    warnings, volumes, cut = [], {}, False
    lungs = np.zeros(ct.array.shape, dtype=bool)
    for name, mask in lungs_by_name.items():
        lungs |= mask
        notes, volumes[name], was_cut = _structure(name, mask, ct, components.get(name, 0))
        warnings += notes
        cut |= was_cut
    warnings = _body(ct, body, lungs) + warnings  # what the scan is comes first, then each lung
    present = [v for v in volumes.values() if v > 0]
    if len(present) == 2 and not cut and max(present) / min(present) > MAX_ASYMMETRY:
        names = " and ".join(f"{n} {v:.0f} ml" for n, v in volumes.items())
        warnings.append(f"strongly asymmetric lungs ({names}): check for a wrong or missed lung")
    return warnings


def _ml(mask: np.ndarray, ct: Volume) -> float:
    return float(mask.sum()) * float(np.prod(ct.spacing)) / 1000


def _sides(ct: Volume, body: np.ndarray, masks: dict[str, np.ndarray], centres: dict[str, np.ndarray]) -> list[str]:
    """Each lateral structure (``*_R``, ``*_L``) on its own side of the body's midline."""
    lateral = {n: c for n, c in centres.items() if n.endswith(("_R", "_L"))}
    if not lateral:
        return []
    slices = np.flatnonzero(np.logical_or.reduce([masks[n] for n in lateral]).any(axis=(1, 2)))
    midline = ct.centroid_lps(_on_slices(body, slices))[0] if body.any() else 0.0
    notes = []
    for name, centre in lateral.items():
        right = centre[0] < midline  # LPS: patient right is -x
        if right != name.endswith("_R"):
            side = "right" if right else "left"
            notes.append(f"{name} lies on the patient's {side} (its centre {abs(centre[0] - midline):.0f} mm "
                         f"{side} of the body's midline): a left-right error in the model or the CT's orientation")
    return notes


def _on_slices(mask: np.ndarray, slices: np.ndarray) -> np.ndarray:
    kept = np.zeros_like(mask)
    if len(slices):
        kept[slices[0]:slices[-1] + 1] = mask[slices[0]:slices[-1] + 1]
    return kept if kept.any() else mask


def _heart(ct: Volume, heart: np.ndarray) -> list[str]:
    if not heart.any():
        return ["Heart not found"]
    area = heart.sum(axis=(1, 2))
    cut = max(area[0], area[-1]) / area.max() >= CUT_FRACTION
    volume = _ml(heart, ct)
    if not cut and not HEART_ML[0] <= volume <= HEART_ML[1]:
        return [f"Heart volume {volume:.0f} ml is implausible ({HEART_ML[0]:.0f}-{HEART_ML[1]:.0f} ml)"]
    return []


def _cord(ct: Volume, masks: dict[str, np.ndarray], centres: dict[str, np.ndarray], components: int) -> list[str]:
    cord = masks["SpinalCord"]
    if not cord.any():
        return ["SpinalCord not found"]
    notes = [f"SpinalCord is in {components} pieces"] if components > 1 else []
    lungs = np.logical_or.reduce([m for n, m in masks.items() if n in ("Lung_R", "Lung_L")] or [np.zeros_like(cord)])
    if lungs.any():
        height = lambda mask: [ct.to_lps([0, 0, k])[2] for k in np.flatnonzero(mask.any(axis=(1, 2)))[[0, -1]]]  # noqa: E731
        cord_ends, lung_ends = sorted(height(cord)), sorted(height(lungs))
        for end, short in (("base", cord_ends[0] - lung_ends[0]), ("apex", lung_ends[1] - cord_ends[1])):
            if short > CORD_SHORT_MM:
                notes.append(f"SpinalCord ends {short:.0f} mm short of the lungs' {end}")
    for name in ("Esophagus", "Heart"):  # LPS: posterior is +y
        if name in centres and centres["SpinalCord"][1] <= centres[name][1]:
            notes.append(f"SpinalCord lies in front of the {name} (centres {centres[name][1] - centres['SpinalCord'][1]:.0f} mm "
                         "apart): the cord runs behind it")
    return notes


def _esophagus(centres: dict[str, np.ndarray]) -> list[str]:
    midline = (centres["Lung_R"][0] + centres["Lung_L"][0]) / 2
    off = centres["Esophagus"][0] - midline
    if abs(off) > MEDIASTINUM_MM:
        side = "right" if off < 0 else "left"
        return [f"Esophagus lies outside the mediastinum: its centre is {abs(off):.0f} mm to the patient's {side} "
                "of the midline between the lungs"]
    return []


def _overlaps(ct: Volume, masks: dict[str, np.ndarray], overlaps: dict[tuple[str, str], int]) -> list[str]:
    notes = []
    voxel_ml = float(np.prod(ct.spacing)) / 1000
    for (first, second), voxels in overlaps.items():
        smaller = min(_ml(masks[n], ct) if n in masks else np.inf for n in (first, second))
        claimed = voxels * voxel_ml
        if claimed >= OVERLAP_ML and claimed > OVERLAP_SHARE * smaller:
            notes.append(f"{first} and {second} overlap: both were found in {claimed:.1f} ml "
                         f"(given to {first}): check their border")
    return notes
