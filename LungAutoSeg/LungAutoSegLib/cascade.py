"""Cascades: a later stage looks, at its own finer spacing, only where earlier stages say.

The thoracic package contours the lungs at 2.5 mm on the whole CT, then the heart, esophagus
and spinal cord at 1.5 mm in the box around the lungs: a cord at 2.5 mm is 3-4 voxels across,
and the whole CT at 1.5 mm would cost five times the voxels. Where a stage looks is data in
the package (``Crop``), used by training (to cut its cases) and inference alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .volume import Volume, bounding_box

CROP_MARGIN_MM = (0.0, 200.0)


@dataclass(frozen=True)
class Crop:
    """The box around the structures ``around`` (found by earlier stages), widened by
    ``margin_mm`` along the patient's L, P and S axes; ``None`` along an axis takes the whole
    scan there (the cord and esophagus run past the lungs, to the scan's ends). When none of
    them was found, the stage sees the whole CT."""

    around: tuple[str, ...]
    margin_mm: tuple[float | None, float | None, float | None]

    @classmethod
    def from_dict(cls, data) -> "Crop":
        margins = data.get("margin_mm") if isinstance(data, dict) else None
        around = data.get("around") if isinstance(data, dict) else None
        valid = (isinstance(around, list) and around and all(isinstance(n, str) for n in around)
                 and isinstance(margins, list) and len(margins) == 3
                 and all(m is None or (isinstance(m, (int, float)) and not isinstance(m, bool)
                                       and CROP_MARGIN_MM[0] <= m <= CROP_MARGIN_MM[1]) for m in margins))
        if not valid:
            raise InputError(f"a stage's crop must give 'around' (structure names) and 'margin_mm' (three numbers "
                             f"in {CROP_MARGIN_MM} mm or null), got {data!r}")
        return cls(tuple(around), tuple(None if m is None else float(m) for m in margins))

    def to_dict(self) -> dict:
        return {"around": list(self.around), "margin_mm": list(self.margin_mm)}

    def region(self, found: np.ndarray, ct: Volume) -> tuple[slice, slice, slice]:
        """The (k, j, i) block of ``ct`` to look at; ``found``: where the ``around`` structures
        lie on the CT's grid. Margins go along the CT axis nearest each patient axis."""
        whole = tuple(slice(0, n) for n in ct.array.shape)
        box = bounding_box(found)
        if box is None:
            return whole
        patient_axis = np.abs(ct.direction).argmax(axis=0)  # per CT axis i, j, k: 0 = L, 1 = P, 2 = S
        region = []
        for kji, (extent, n) in enumerate(zip(box, ct.array.shape)):
            ijk = 2 - kji
            margin = self.margin_mm[patient_axis[ijk]]
            if margin is None:
                region.append(whole[kji])
                continue
            extra = int(np.ceil(margin / ct.spacing[ijk]))
            region.append(slice(max(0, extent.start - extra), min(n, extent.stop + extra)))
        return tuple(region)


def cropped(volume: Volume, region: tuple[slice, slice, slice]) -> Volume:
    """The voxels of ``region`` with their own grid (same spacing and axes, shifted origin)."""
    start_ijk = [region[2].start, region[1].start, region[0].start]
    grid = volume.block(start_ijk, [s.stop - s.start for s in region])
    return Volume(np.ascontiguousarray(volume.array[region]), grid.ijk_to_lps)
