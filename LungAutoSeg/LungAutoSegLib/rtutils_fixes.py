"""Fixes for three bugs of rt-utils 1.2.7 (the latest release), applied on import.

1. Masks of non-square images come back with rows and columns swapped: rt-utils
   allocates ``(Columns, Rows)`` but draws ``[row, column]``.
2. Row and column pixel spacing are swapped when contours are written: DICOM
   PixelSpacing is (between rows, between columns), so the column index (along the
   row direction) steps by PixelSpacing[1], not PixelSpacing[0].
3. ``RTStructBuilder.create_from(..., warn_only=True)`` raises NameError: the module
   uses ``warnings`` without importing it.

Contours are also placed on slices by their geometry rather than only by
ContourImageSequence UIDs (a Type 3 attribute that some planning systems omit).
Each fix is guarded by a regression test in Testing/test_rtstruct.py.
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np
from rt_utils import image_helper, rtstruct_builder

# A contour more than this fraction of a slice away from a slice centre lies between slices.
PLANE_TOL_SLICES = 0.25


def pixel_to_patient_matrix(series_data) -> np.ndarray:
    """(column, row, slice) index -> LPS mm, for rt-utils' sorted series."""
    first = series_data[0]
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    row_direction, column_direction, slice_direction = image_helper.get_slice_directions(first)
    matrix = np.identity(4)
    matrix[:3, 0] = row_direction * column_spacing
    matrix[:3, 1] = column_direction * row_spacing
    matrix[:3, 2] = slice_direction * image_helper.get_spacing_between_slices(series_data)
    matrix[:3, 3] = np.asarray(first.ImagePositionPatient, dtype=np.float64)
    return matrix


def patient_to_pixel_matrix(series_data) -> np.ndarray:
    return np.linalg.inv(pixel_to_patient_matrix(series_data))


def empty_series_mask(series_data) -> np.ndarray:
    first = series_data[0]
    return np.zeros((int(first.Rows), int(first.Columns), len(series_data)), dtype=bool)


def empty_slice_mask(series_slice) -> np.ndarray:
    return np.zeros((int(series_slice.Rows), int(series_slice.Columns)), dtype=bool)


def contours_to_mask(series_data, contour_sequence) -> tuple[np.ndarray, int]:
    """Rasterise contours onto the series; returns (mask[row, column, slice], unplaced count).

    All polygons of a slice are filled in one call, so a hole traced inside an outer
    contour is left empty (even-odd), as rt-utils does.
    """
    mask = empty_series_mask(series_data)
    to_pixel = patient_to_pixel_matrix(series_data)
    polygons_by_slice: dict[int, list[np.ndarray]] = {}
    unplaced = 0
    for contour in contour_sequence:
        points = np.reshape(np.asarray(contour.ContourData, dtype=np.float64), (-1, 3))
        pixels = image_helper.apply_transformation_to_3d_points(points, to_pixel)
        plane = float(np.mean(pixels[:, 2]))
        index = int(round(plane))
        if abs(plane - index) > PLANE_TOL_SLICES or not 0 <= index < mask.shape[2]:
            unplaced += 1
            continue
        polygons_by_slice.setdefault(index, []).append(np.around(pixels[:, :2]).astype(np.int32))
    for index, polygons in polygons_by_slice.items():
        slice_mask = np.zeros(mask.shape[:2], dtype=np.uint8)
        cv2.fillPoly(slice_mask, polygons, 1)
        mask[:, :, index] = slice_mask.astype(bool)
    return mask, unplaced


def _series_mask_from_contour_sequence(series_data, contour_sequence) -> np.ndarray:
    return contours_to_mask(series_data, contour_sequence)[0]


def apply() -> None:
    """Install the fixes into rt-utils (idempotent)."""
    image_helper.get_pixel_to_patient_transformation_matrix = pixel_to_patient_matrix
    image_helper.get_patient_to_pixel_transformation_matrix = patient_to_pixel_matrix
    image_helper.create_empty_series_mask = empty_series_mask
    image_helper.create_empty_slice_mask = empty_slice_mask
    image_helper.create_series_mask_from_contour_sequence = _series_mask_from_contour_sequence
    rtstruct_builder.warnings = warnings


apply()
