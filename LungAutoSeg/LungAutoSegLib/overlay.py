"""Mask overlays on axial, coronal and sagittal mid-slices, in radiological convention.

Everything is first resampled onto an axis-aligned grid (i -> L, j -> P, k -> S), so the
patient's right is on the picture's left whatever the CT's orientation, and an "R" marks
it. Predictions are filled in the structure's colour; a reference, when given, is drawn
as a white outline on top.
"""
from __future__ import annotations

import cv2
import numpy as np
import SimpleITK as sitk

from .image_io import volume_to_sitk
from .preprocess import AIR_HU, model_grid, resample
from .volume import Volume

WINDOW = (-1000.0, 400.0)  # lung-friendly display window, HU


def overlay_panel(ct: Volume, labels: Volume, colours: list[tuple[int, int, int]],
                  reference: Volume | None = None, spacing: float = 2.0) -> np.ndarray:
    """RGB uint8 picture: the three mid-slice views side by side, through the labels' centre.
    Only the three planes are resampled, not the whole grid (0.3 s -> 0.05 s on 512x512x130)."""
    grid = model_grid(ct, [spacing] * 3)
    centre = _centre(labels, grid)
    planes = [_plane(grid, axis, centre[axis]) for axis in range(3)]
    image = volume_to_sitk(ct)
    grey = [(np.clip((resample(image, plane, default=AIR_HU) - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 255)
            .astype(np.uint8) for plane in planes]
    predicted = _nearest(labels, planes)
    truth = _nearest(reference, planes) if reference is not None else [None] * 3
    pictures = []
    for view, labelled, true, marker in zip(_views(grey), _views(predicted), _views(truth), ("R", "R", "A")):
        rgb = np.repeat(view[..., None], 3, axis=2).astype(np.float32)
        for value, colour in enumerate(colours, start=1):
            inside = labelled == value
            rgb[inside] = 0.55 * rgb[inside] + 0.45 * np.asarray(colour, np.float32)
        rgb = rgb.astype(np.uint8)
        if true is not None:
            for value in range(1, len(colours) + 1):
                contours, _ = cv2.findContours((true == value).astype(np.uint8), cv2.RETR_LIST,
                                               cv2.CHAIN_APPROX_NONE)
                cv2.drawContours(rgb, contours, -1, (255, 255, 255), 1)
        pictures.append(_marked(rgb, marker))
    height = max(p.shape[0] for p in pictures)
    return np.concatenate([np.pad(p, ((0, height - p.shape[0]), (0, 4), (0, 0))) for p in pictures], axis=1)


def _centre(labels: Volume, grid: Volume) -> tuple[int, int, int]:
    """The labels' centre of mass as a (k, j, i) index of ``grid`` (its middle if no labels),
    from every second voxel along each axis: near enough to choose slices, 8x less work."""
    inside = labels.array[::2, ::2, ::2] > 0
    if not inside.any():
        return tuple(n // 2 for n in grid.array.shape)
    kji = 2 * np.argwhere(inside).mean(axis=0)
    on_grid = grid.to_ijk(labels.to_lps(kji[::-1]))[::-1]
    return tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(on_grid, grid.array.shape))


def _plane(grid: Volume, axis: int, index: int) -> Volume:
    """The one-voxel-thick slab of ``grid`` at ``index`` along array ``axis`` (k, j or i)."""
    shape = list(grid.array.shape)
    shape[axis] = 1
    start = np.zeros(3)
    start[2 - axis] = index  # array axis (k, j, i) -> ijk column
    return grid.block(start, shape)


def _nearest(labels: Volume, planes: list[Volume]) -> list[np.ndarray]:
    image = volume_to_sitk(labels)
    return [resample(image, plane, interpolator=sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
            for plane in planes]


def _views(planes: list) -> list:
    """Axial (A up, R left), coronal and sagittal (S up) pictures of the three planes."""
    if planes[0] is None:
        return [None] * 3
    axial, coronal, sagittal = planes
    return [axial[0], np.flipud(coronal[:, 0, :]), np.flipud(sagittal[:, :, 0])]


def _marked(rgb: np.ndarray, marker: str) -> np.ndarray:
    """Name the patient side on the picture's left: R (axial, coronal) or A (sagittal)."""
    rgb = np.ascontiguousarray(rgb)
    for colour, thickness in (((0, 0, 0), 3), ((255, 255, 0), 1)):  # a dark rim: readable on bone too
        cv2.putText(rgb, marker, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thickness, cv2.LINE_AA)
    return rgb
