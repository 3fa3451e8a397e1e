"""DICOM SEG (binary or fractional) -> masks on a CT's grid, through highdicom.

Segments are matched to the CT by frame of reference and voxel positions, not by the SOP
instance UIDs the SEG references: TCIA's NSCLC-Radiomics SEGs reference the CT slices under
another UID root (``1.3.6.1.4.1.40744.29.`` instead of the CT's ``1.3.6.1.4.1.32722.99.99.``,
same suffixes), a real anonymiser's slip that a UID match would turn into "no slices".
The SEG's grid must be the CT's grid up to axis order and direction (every SEG made on a CT
is); anything else is refused rather than resampled.
"""
from __future__ import annotations

import os

import numpy as np

from LungAutoSegLib.dicom_io import DicomCT
from LungAutoSegLib.errors import InputError

GRID_TOL = 0.01  # voxels


def _read(path):
    import highdicom as hd

    try:
        return hd.seg.segread(path)
    except Exception as error:  # highdicom raises several types for a file that is not a SEG
        raise InputError(f"not a readable DICOM SEG ({type(error).__name__}: {error})", path) from error


def _index_map(seg_affine: np.ndarray, ct: DicomCT, path) -> tuple[list[np.ndarray], np.ndarray]:
    """For each SEG array axis, the SEG index of every CT voxel along the one CT axis it follows;
    and which CT axis (0 k, 1 j, 2 i) each SEG axis follows."""
    ct_kji = ct.volume.ijk_to_lps[:, [2, 1, 0, 3]]  # columns for (k, j, i) + origin
    mapping = np.linalg.inv(seg_affine) @ ct_kji  # CT (k, j, i, 1) -> SEG (a0, a1, a2, 1)
    linear = mapping[:3, :3]
    permutation = np.abs(linear).argmax(axis=1)
    expected = np.zeros((3, 3))
    expected[np.arange(3), permutation] = np.sign(linear[np.arange(3), permutation])
    offsets = mapping[:3, 3]
    if sorted(permutation) != [0, 1, 2] or not np.allclose(linear, expected, atol=GRID_TOL) \
            or not np.allclose(offsets, np.round(offsets), atol=GRID_TOL):
        raise InputError("the SEG's voxel grid is not the CT's grid (other spacing or positions)", path)
    ct_shape = ct.volume.array.shape
    return [np.round(offsets[a] + expected[a, permutation[a]] * np.arange(ct_shape[permutation[a]])).astype(int)
            for a in range(3)], permutation


def read_seg_masks(path: str | os.PathLike, ct: DicomCT, labels: list[str]) -> dict[str, np.ndarray]:
    """Masks (``array[k, j, i]`` on the CT grid) of the named segments of a DICOM SEG."""
    seg = _read(path)
    frame = ct.datasets[0].get("FrameOfReferenceUID")
    if frame and seg.FrameOfReferenceUID != frame:
        raise InputError(f"SEG is on frame of reference {seg.FrameOfReferenceUID}, the CT on {frame}", path)
    numbers = {str(d.SegmentLabel): int(d.SegmentNumber) for d in seg.SegmentSequence}
    missing = [name for name in labels if name not in numbers]
    if missing:
        raise InputError(f"no segment named {', '.join(missing)} (it has {sorted(numbers)})", path)
    volume = seg.get_volume(segment_numbers=[numbers[name] for name in labels], combine_segments=False)
    array = np.asarray(volume.array)
    (a0, a1, a2), permutation = _index_map(np.asarray(volume.affine), ct, path)
    inside = [(index >= 0) & (index < n) for index, n in zip((a0, a1, a2), array.shape[:3])]
    masks = {}
    for channel, name in enumerate(labels):
        block = np.zeros(ct.volume.array.shape, dtype=bool)
        picked = array[np.ix_(a0[inside[0]], a1[inside[1]], a2[inside[2]])][..., channel] > 0
        # SEG axes (a0, a1, a2) follow CT axes ``permutation``: put them back in CT order
        target = [np.flatnonzero(inside[a]) for a in range(3)]
        order = np.argsort(permutation)
        block[np.ix_(*[target[a] for a in order])] = np.transpose(picked, order)
        masks[name] = block
    return masks
