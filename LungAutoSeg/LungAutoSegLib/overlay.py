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

from .preprocess import AIR_HU, model_grid, resample
from .volume import Volume

WINDOW = (-1000.0, 400.0)  # lung-friendly display window, HU


def _views(array: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial (A up, R left), coronal and sagittal (S up) cuts of array[k, j, i] through centre."""
    k, j, i = centre
    return [array[k], np.flipud(array[:, j, :]), np.flipud(array[:, :, i])]


def overlay_panel(ct: Volume, labels: Volume, colours: list[tuple[int, int, int]],
                  reference: Volume | None = None, spacing: float = 2.0) -> np.ndarray:
    """RGB uint8 picture: the three mid-slice views side by side, through the labels' centre."""
    grid = model_grid(ct, [spacing] * 3)
    hu = resample(ct, grid, default=AIR_HU)
    predicted = resample(labels, grid, interpolator=sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
    truth = None if reference is None else resample(
        reference, grid, interpolator=sitk.sitkNearestNeighbor, pixel_type=sitk.sitkUInt8)
    found = np.argwhere(predicted > 0) if predicted.any() else np.argwhere(np.ones_like(predicted))
    centre = tuple(int(c) for c in np.round(found.mean(axis=0)))
    grey = (np.clip((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1) * 255).astype(np.uint8)
    pictures = []
    for view, labelled, true, marker in zip(_views(grey, centre), _views(predicted, centre),
                                            _views(truth, centre) if truth is not None else [None] * 3,
                                            ("R", "R", "A")):
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


def _marked(rgb: np.ndarray, marker: str) -> np.ndarray:
    """Name the patient side on the picture's left: R (axial, coronal) or A (sagittal)."""
    rgb = np.ascontiguousarray(rgb)
    cv2.putText(rgb, marker, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return rgb
