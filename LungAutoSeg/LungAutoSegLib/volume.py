"""The one geometry convention of LungAutoSeg.

A volume is ``array[k, j, i]`` (slice, row, column: the order of SimpleITK's
``GetArrayFromImage`` and Slicer's ``arrayFromVolume``) plus a 4x4 matrix
``ijk_to_lps`` that maps a voxel index (i, j, k) to DICOM patient coordinates
(LPS, millimetres). Readers and writers convert to and from this at the border;
nothing inside the project ever decides anatomy from an array index. Patient
right is -x in LPS.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


@dataclass
class Volume:
    """Voxels on a grid located in patient space (LPS, mm)."""

    array: np.ndarray
    ijk_to_lps: np.ndarray
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self):
        self.ijk_to_lps = np.asarray(self.ijk_to_lps, dtype=np.float64)
        if self.array.ndim != 3:
            raise InputError(f"a volume must be 3D, got shape {self.array.shape}")
        if self.ijk_to_lps.shape != (4, 4):
            raise InputError("ijk_to_lps must be a 4x4 matrix")

    @classmethod
    def from_spacing(cls, array, spacing, origin, direction=np.eye(3), **kwargs) -> "Volume":
        """Build from ITK-style geometry: spacing (i, j, k), origin, direction columns = axes."""
        return cls(array, affine_from_itk(spacing, origin, direction), **kwargs)

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return i, j, k

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.ijk_to_lps[:3, :3], axis=0)

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.spacing))

    @property
    def origin(self) -> np.ndarray:
        """LPS position of the centre of voxel (0, 0, 0)."""
        return self.ijk_to_lps[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix whose columns are the unit i, j, k axes in LPS."""
        return self.ijk_to_lps[:3, :3] / self.spacing

    def with_array(self, array: np.ndarray) -> "Volume":
        """The same grid carrying other voxels (a label map, a probability map)."""
        if array.shape != self.array.shape:
            raise ValueError(f"shape {array.shape} does not match the grid {self.array.shape}")
        return Volume(array, self.ijk_to_lps.copy())

    def voxel_centres_lps(self, k_slice: slice = slice(None)) -> np.ndarray:
        """LPS coordinates of voxel centres, shaped like ``array[k_slice]`` + (3,)."""
        nk, nj, ni = self.array.shape
        k = np.arange(nk)[k_slice]
        kk, jj, ii = np.meshgrid(k, np.arange(nj), np.arange(ni), indexing="ij")
        return self.to_lps(np.stack([ii, jj, kk], axis=-1).astype(np.float64))

    def to_lps(self, points_ijk) -> np.ndarray:
        """LPS mm of continuous voxel indices (i, j, k), shape (..., 3): the one place the
        voxel-to-patient mapping is applied to points."""
        return np.asarray(points_ijk, dtype=np.float64) @ self.ijk_to_lps[:3, :3].T + self.ijk_to_lps[:3, 3]

    def to_ijk(self, points_lps) -> np.ndarray:
        """Continuous voxel indices (i, j, k) of LPS points, shape (..., 3): ``to_lps`` undone."""
        inverse = np.linalg.inv(self.ijk_to_lps)
        return np.asarray(points_lps, dtype=np.float64) @ inverse[:3, :3].T + inverse[:3, 3]

    def block(self, start_ijk, shape_kji) -> "Volume":
        """An empty grid (uint8 zeros): this grid's voxels from ``start_ijk``, ``shape_kji`` of them."""
        affine = self.ijk_to_lps.copy()
        affine[:3, 3] = self.to_lps(start_ijk)
        return Volume(np.zeros(tuple(int(n) for n in shape_kji), dtype=np.uint8), affine)

    def centroid_lps(self, mask: np.ndarray) -> np.ndarray:
        """LPS centre of mass of a boolean mask on this grid. From projections (the centre is
        linear in the indices): np.argwhere of a body on a 512x512 CT would take gigabytes."""
        total = int(np.count_nonzero(mask))
        if total == 0:
            raise ValueError("empty mask has no centroid")
        kji = [float((np.count_nonzero(mask, axis=tuple(a for a in range(3) if a != axis)) * np.arange(n)).sum()) / total
               for axis, n in enumerate(mask.shape)]
        return self.to_lps(kji[::-1])


def bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest block (one slice per axis) holding every True voxel; None when empty.
    From projections, not np.argwhere: a lung on a 512x512 CT is millions of voxels."""
    box = []
    for axis in range(mask.ndim):
        present = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if not len(present):
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def affine_from_itk(spacing, origin, direction) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(direction, dtype=np.float64).reshape(3, 3) * np.asarray(
        spacing, dtype=np.float64
    )
    affine[:3, 3] = origin
    return affine


def is_orthonormal(direction: np.ndarray, tol: float = 1e-3) -> bool:
    return np.allclose(direction.T @ direction, np.eye(3), atol=tol)
