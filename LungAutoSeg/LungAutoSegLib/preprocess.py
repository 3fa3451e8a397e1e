"""Preprocessing: a CT onto the model grid, as the package's plan (``plan.Preprocessing``) says.

A CT is resampled onto the *model grid*: axis-aligned with the patient (i -> L, j -> P,
k -> S, whatever the CT's own orientation), at the model's spacing, covering the CT's
extent. So the network always sees the patient's right at low i, and a flipped or
oblique CT gives the same input as an axial one. Intensities are clipped to a HU window
and scaled to [0, 1]. Training's cache and inference both call ``image_to_model``; the way
back is ``to_ct_grid``.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .image_io import volume_to_sitk
from .plan import Preprocessing
from .volume import Volume

AIR_HU = -1024.0
# Bumped whenever image_to_model's output changes, so training caches are rebuilt.
# 2: axes whose anti-aliasing kernel is under a quarter voxel are no longer smoothed.
REVISION = 2


def model_grid(ct: Volume, spacing) -> Volume:
    """An empty axis-aligned grid at ``spacing`` covering every voxel centre of ``ct``."""
    ni, nj, nk = ct.shape_ijk
    corners = np.array([[i, j, k] for i in (0, ni - 1) for j in (0, nj - 1) for k in (0, nk - 1)], float)
    corners_lps = ct.to_lps(corners)
    low, high = corners_lps.min(axis=0), corners_lps.max(axis=0)
    spacing = np.asarray(spacing, dtype=np.float64)
    size = np.floor((high - low) / spacing + 1e-6).astype(int) + 1
    centre = (low + high) / 2
    origin = centre - (size - 1) * spacing / 2  # centred, so no side is favoured
    return Volume.from_spacing(np.zeros(size[::-1], dtype=np.uint8), spacing, origin)


def resample(volume: Volume | sitk.Image, grid: Volume, *, interpolator=sitk.sitkLinear, default: float = 0.0,
             pixel_type=sitk.sitkFloat32) -> np.ndarray:
    """``volume``'s voxels sampled at ``grid``'s voxel centres (array[k, j, i]). Pass an image
    from ``volume_to_sitk`` to sample one volume onto several grids without copying it each time.
    Linear sampling between two grids whose axes are the patient's (axial, possibly flipped) goes
    axis by axis (``_separable_linear``), other cases through SimpleITK."""
    if (interpolator == sitk.sitkLinear and pixel_type == sitk.sitkFloat32 and isinstance(volume, Volume)
            and _is_axial(volume) and _is_axial(grid)):
        return _separable_linear(volume, grid, default)
    image = volume if isinstance(volume, sitk.Image) else volume_to_sitk(volume)
    return sitk.GetArrayFromImage(sitk.Resample(image, _reference(grid), sitk.Transform(), interpolator, default,
                                                pixel_type))


def _is_axial(volume: Volume) -> bool:
    return bool(np.allclose(np.abs(volume.direction), np.eye(3), atol=1e-6))


SLAB = 8  # slices per step of _separable_linear: a few MB of float64 at a time


def _separable_linear(volume: Volume, grid: Volume, default: float) -> np.ndarray:
    """SimpleITK's linear resampling (the same edge rules, ``_linear_interpolation``) done as
    three one-axis matrix products in float64, rounded to float32 as SimpleITK rounds its double
    sums: a mask's share differs by double rounding at most (1e-15), so a label map is the same
    voxels (the golden test; the 512x512 benchmark CT). Twice as fast as SimpleITK for a lung's
    box on a 512x512 CT."""
    (along_i, out_i), (along_j, out_j), (along_k, out_k) = [
        _linear_interpolation(_grid_indices(grid, volume, axis), volume.shape_ijk[axis]) for axis in range(3)]
    used = [np.flatnonzero(matrix.any(axis=0)) for matrix in (along_k, along_j, along_i)]
    if not all(len(u) for u in used):  # the grid lies wholly outside
        return np.full(grid.array.shape, default, np.float32)
    used = [slice(u[0], u[-1] + 1) for u in used]  # the voxels that reach the grid
    along_k, along_j, along_i = along_k[:, used[0]], along_j[:, used[1]], along_i[:, used[2]]
    block = volume.array[tuple(used)].astype(np.float64)
    nk, nj, ni = block.shape
    thinned = (along_k @ block.reshape(nk, -1)).reshape(-1, nj, ni)  # slices first: the in-plane axes grow
    values = np.empty(grid.array.shape, np.float32)                  # the array most; in slabs, so that
    along_i_t = along_i.T.copy()                                     # no float64 copy of the whole is held
    for k in range(0, len(values), SLAB):
        values[k:k + SLAB] = np.matmul(along_j, thinned[k:k + SLAB]) @ along_i_t
    values[out_k], values[:, out_j], values[:, :, out_i] = default, default, default
    return values


def _reference(grid: Volume) -> sitk.Image:
    reference = sitk.Image([int(n) for n in grid.shape_ijk], sitk.sitkUInt8)
    reference.SetSpacing([float(s) for s in grid.spacing])
    reference.SetOrigin([float(o) for o in grid.origin])
    reference.SetDirection([float(d) for d in grid.direction.ravel()])
    return reference


def _antialias_sigma(ct_spacing, spacing) -> np.ndarray:
    """Per axis (mm): the Gaussian that brings ``ct_spacing`` to the coarsest model spacing.
    An axis whose Gaussian would be under a quarter voxel wide gets 0 (left alone): such a
    kernel moves no value by more than about a HU (0.6 HU at most on a 2.33 mm slice axis,
    smoothed towards 2.5 mm) and skipping it saves a third of the time."""
    ct_spacing = np.asarray(ct_spacing, dtype=np.float64)
    sigma = np.sqrt(np.maximum(np.square(np.min(spacing)) - np.square(ct_spacing), 0.0)) / 2.355
    return np.where(sigma >= 0.25 * ct_spacing, sigma, 0.0)


def _smoothed_resampled(ct: Volume, grid: Volume, spacing) -> np.ndarray:
    """Gaussian anti-aliasing (so a 0.6 mm and a 3 mm CT give the same input), then linear
    resampling onto ``grid``, through SimpleITK: any orientation."""
    image = sitk.Cast(volume_to_sitk(ct), sitk.sitkFloat32)
    for axis, sigma in enumerate(_antialias_sigma(ct.spacing, spacing)):
        if sigma:
            image = sitk.RecursiveGaussian(image, float(sigma), False, sitk.RecursiveGaussianImageFilter.ZeroOrder,
                                           axis)
    return sitk.GetArrayFromImage(sitk.Resample(image, _reference(grid), sitk.Transform(), sitk.sitkLinear, AIR_HU,
                                                sitk.sitkFloat32))


def _axis_matrices(ct: Volume, grid: Volume, spacing) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """For a CT whose axes are the model grid's (axial, possibly flipped), the same smoothing
    and resampling is linear and separable: per axis a matrix (model voxels x CT voxels) and
    the model voxels that fall outside the CT. None for any other orientation."""
    if not _is_axial(ct):
        return None
    sigmas = _antialias_sigma(ct.spacing, spacing)
    matrices = []
    for axis in range(3):  # i, j, k
        n = ct.shape_ijk[axis]
        interpolate, outside = _linear_interpolation(_grid_indices(grid, ct, axis), n)
        matrices.append(((interpolate @ _gaussian_matrix(n, sigmas[axis], ct.spacing[axis])).astype(np.float32),
                         outside))
    return matrices


def _grid_indices(grid: Volume, volume: Volume, axis: int) -> np.ndarray:
    """Where ``grid``'s voxel centres lie along ``axis`` (i, j or k) in ``volume``'s continuous
    voxel indices; both axial."""
    positions = grid.ijk_to_lps[axis, 3] + np.arange(grid.shape_ijk[axis]) * grid.ijk_to_lps[axis, axis]
    return (positions - volume.ijk_to_lps[axis, 3]) / volume.ijk_to_lps[axis, axis]


def _linear_interpolation(indices: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK's linear interpolation at continuous ``indices`` along an axis of ``n`` voxels
    as a matrix (positions x voxels), and the positions outside: inside within half a voxel of
    the end voxels (there the edge value), outside beyond (the default value; a zero row)."""
    outside = (indices < -0.5) | (indices >= n - 0.5)
    clipped = np.clip(indices, 0.0, n - 1.0)
    low = np.minimum(np.floor(clipped).astype(int), max(n - 2, 0))
    rows, matrix = np.arange(len(indices)), np.zeros((len(indices), n))
    np.add.at(matrix, (rows, low), 1.0 - (clipped - low))
    np.add.at(matrix, (rows, np.minimum(low + 1, n - 1)), clipped - low)
    matrix[outside] = 0.0
    return matrix, outside


def _gaussian_matrix(n: int, sigma: float, spacing: float) -> np.ndarray:
    """SimpleITK's recursive Gaussian along one axis of n voxels, as a matrix: its response
    to each unit impulse (edges included), so both paths give the same numbers."""
    if not sigma:
        return np.eye(n)
    impulses = sitk.GetImageFromArray(np.eye(n, dtype=np.float32))
    impulses.SetSpacing([float(spacing)] * 2)
    responses = sitk.RecursiveGaussian(impulses, float(sigma), False, sitk.RecursiveGaussianImageFilter.ZeroOrder, 0)
    return sitk.GetArrayFromImage(responses).astype(np.float64).T


def image_to_model(ct: Volume, settings: Preprocessing) -> tuple[np.ndarray, Volume]:
    """The network input (float32 in [0, 1], array[k, j, i]) and the model grid it lies on.

    An axial CT goes through three matrix products (four times faster than SimpleITK on a
    512x512x130 CT, equal to 0.001 HU); any other orientation through SimpleITK."""
    grid = model_grid(ct, settings.spacing)
    matrices = _axis_matrices(ct, grid, settings.spacing)
    if matrices is None:
        hu = _smoothed_resampled(ct, grid, settings.spacing)
    else:
        (along_i, out_i), (along_j, out_j), (along_k, out_k) = matrices
        nk, nj, ni = ct.array.shape
        hu = ct.array.astype(np.float32).reshape(nk * nj, ni) @ along_i.T                  # (k, j, i')
        hu = hu.reshape(nk, nj, -1).transpose(0, 2, 1).reshape(-1, nj) @ along_j.T        # (k, i', j')
        hu = along_k @ hu.reshape(nk, -1)                                                # (k', i', j')
        hu = hu.reshape(len(along_k), len(along_i), len(along_j)).transpose(0, 2, 1).copy()
        hu[out_k], hu[:, out_j], hu[:, :, out_i] = AIR_HU, AIR_HU, AIR_HU
    low, high = settings.hu_window
    return ((np.clip(hu, low, high) - low) / (high - low)).astype(np.float32), grid


def labels_to_model(labels: Volume, grid: Volume) -> np.ndarray:
    """A label map (any grid) on the model grid, nearest neighbour, uint8."""
    return resample(labels, grid, interpolator=sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
