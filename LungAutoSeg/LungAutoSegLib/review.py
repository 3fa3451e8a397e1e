"""The review map: where the model is unsure, so a dosimetrist knows where to look first.

Per structure, a voxel's doubt is 1 - |2p - 1| for the model's probability p of that
structure there: 0 where the model is sure either way, 1 where it is split half and half
(the contour's edge runs there). The map is the largest doubt of any structure, in percent
(uint8 0-100) on the CT's grid. For each structure the report lists the few slice ranges
that hold most of its doubt, with where they lie ("slices 41-47, posterior base"). Every
drawn edge carries a band of doubt, so a slice counts by its doubt beyond the band a clean
edge of its length has (the structure's median doubt per edge voxel): a wide lung slice
with a crisp edge is not where to look, a blurred dependent base or a doubtful bronchus is.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .to_ct_grid import reach, resampled_in
from .volume import Volume

DOUBT_SHARE = 0.5   # the ranges hold at least this much of a structure's doubt (their slices, most first)
MAX_RANGES = 3
JOIN_GAP = 2        # model slices between two runs that still make them one range
SIDE_MM = 10.0      # doubt this far behind or in front of the structure's centre is posterior / anterior


@dataclass
class Review:
    map: Volume                        # uint8 percent doubt on the CT's grid
    ranges: dict[str, list[dict]]      # per structure, ``doubt_ranges``


def review(probabilities: np.ndarray, masks: np.ndarray, names: list[str], grid: Volume, ct: Volume) -> Review:
    """From the structures' probabilities and masks (n, k, j, i) on the model grid."""
    doubts = doubt(probabilities)
    return Review(review_map(doubts, grid, ct),
                  {name: doubt_ranges(d, m, grid, ct) for name, d, m in zip(names, doubts, masks)})


def doubt(probabilities: np.ndarray) -> np.ndarray:
    """(n, k, j, i) per-structure doubt from the structures' probabilities (background left out)."""
    return 1.0 - np.abs(2.0 * probabilities - 1.0)


def review_map(doubts: np.ndarray, grid: Volume, ct: Volume) -> Volume:
    """The largest doubt in percent on the CT's grid; resampled only where there is doubt."""
    strongest = doubts.max(axis=0)
    on_ct = np.zeros(ct.array.shape, dtype=np.uint8)
    region = reach(strongest > 0.01, grid, ct) if (strongest > 0.01).any() else None
    if region is not None:
        on_ct[region] = np.clip(np.rint(100 * resampled_in(region, grid.with_array(strongest), ct)), 0, 100)
    return ct.with_array(on_ct)


def doubt_ranges(structure_doubt: np.ndarray, mask: np.ndarray, grid: Volume, ct: Volume) -> list[dict]:
    """The slice ranges (CT slice indices) holding most of one structure's doubt, largest first."""
    per_slice = _excess_per_slice(structure_doubt, mask)
    total = float(per_slice.sum())
    if total <= 0 or not mask.any():
        return []
    order = np.argsort(per_slice)[::-1]
    chosen = order[: int(np.searchsorted(np.cumsum(per_slice[order]), DOUBT_SHARE * total)) + 1]
    ranges = _runs(sorted(int(k) for k in chosen))
    ranges.sort(key=lambda run: -per_slice[run[0]:run[1] + 1].sum())
    beyond_edge = structure_doubt * ~_rim(mask)  # where the doubt lies, without the band every edge has
    return [_describe(run, beyond_edge if beyond_edge[run[0]:run[1] + 1].any() else structure_doubt, per_slice,
                      total, mask, grid, ct) for run in ranges[:MAX_RANGES]]


def _rim(mask: np.ndarray) -> np.ndarray:
    """The structure's edge voxels and their neighbours (in 3D): where a clean edge's doubt lies."""
    edge = mask & ~_eroded(mask)
    rim = edge.copy()
    for axis in range(3):
        rim |= np.roll(edge, 1, axis) | np.roll(edge, -1, axis)
    return rim


def _eroded(mask: np.ndarray) -> np.ndarray:
    inner = mask.copy()
    for axis in range(3):
        inner &= np.roll(mask, 1, axis) & np.roll(mask, -1, axis)
    return inner


def _excess_per_slice(structure_doubt: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per model slice: doubt beyond what a clean edge as long as that slice's would carry."""
    mass = structure_doubt.sum(axis=(1, 2))
    edge = (mask & ~_eroded(mask)).sum(axis=(1, 2))
    if not edge.any():
        return mass
    typical = float(np.median(mass[edge > 0] / edge[edge > 0]))
    excess = np.maximum(mass - typical * edge, 0.0)
    return excess if excess.sum() > 0 else mass


def _runs(slices: list[int]) -> list[tuple[int, int]]:
    runs = [[slices[0], slices[0]]]
    for k in slices[1:]:
        if k - runs[-1][1] <= JOIN_GAP + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    return [tuple(run) for run in runs]


def _describe(run, structure_doubt, per_slice, total, mask, grid: Volume, ct: Volume) -> dict:
    first, last = run
    block = structure_doubt[first:last + 1]
    kji = np.argwhere(block > 0)
    weights = block[block > 0]
    centre_model = (kji * weights[:, None]).sum(axis=0) / weights.sum() + [first, 0, 0]
    centre = grid.to_lps(centre_model[::-1])
    structure_centre = grid.centroid_lps(mask)
    slices = sorted(int(round(ct.to_ijk(grid.to_lps([centre_model[2], centre_model[1], k]))[2])) for k in (first, last))
    low, high = (grid.to_lps([0, 0, k])[2] for k in np.flatnonzero(mask.any(axis=(1, 2)))[[0, -1]])
    height = (centre[2] - low) / max(high - low, 1e-6)  # 0 at the structure's lowest slice, 1 at its highest
    level = "base" if height < 1 / 3 else "apex" if height > 2 / 3 else "middle"
    side = ("posterior " if centre[1] - structure_centre[1] > SIDE_MM
            else "anterior " if structure_centre[1] - centre[1] > SIDE_MM else "")
    slices = [max(0, min(s, ct.shape_ijk[2] - 1)) for s in slices]
    return {"slices": slices, "where": side + level, "share": round(float(per_slice[first:last + 1].sum()) / total, 3),
            "centre_lps_mm": [round(float(c), 1) for c in centre]}


def summary_lines(ranges: dict[str, list[dict]]) -> list[str]:
    """One line per range, for people: "Lung_L: slices 41-47, posterior base (38% of its doubt)"."""
    return [f"{name}: slices {r['slices'][0]}-{r['slices'][1]}, {r['where']} ({100 * r['share']:.0f}% of its doubt)"
            for name, found in ranges.items() for r in found]
