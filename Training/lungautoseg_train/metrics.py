"""Segmentation metrics on a CT's own grid, in millimetres.

Implementation (the choice changes the numbers, so it is named in every report):
MONAI 1.6 ``compute_hausdorff_distance`` (95th percentile, symmetric, Euclidean, between
the edge voxels of both masks), ``compute_average_surface_distance`` (symmetric mean of
the same edge-voxel distances) and ``compute_surface_dice`` with ``use_subvoxels=True``
(DeepMind's surface-element weighting) at a 2 mm tolerance, all with the grid's voxel
spacing. Masks are cropped to their joint bounding box plus one voxel first, which leaves
every distance unchanged and makes a 512x512x130 case fast. Voxels of an ``ignore`` mask
(lesions the reference does not score) are removed from both masks.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

SURFACE_TOLERANCE_MM = 2.0
IMPLEMENTATION = (f"MONAI compute_hausdorff_distance(percentile=95), compute_average_surface_distance"
                  f"(symmetric=True), compute_surface_dice(use_subvoxels=True, tolerance={SURFACE_TOLERANCE_MM} mm); "
                  "Euclidean, the CT grid's spacing")


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    total = prediction.sum() + reference.sum()
    return float("nan") if total == 0 else float(2.0 * np.logical_and(prediction, reference).sum() / total)


def _crop(*masks: np.ndarray) -> tuple[np.ndarray, ...]:
    found = np.argwhere(np.logical_or.reduce(masks))
    low = np.maximum(found.min(axis=0) - 1, 0)
    high = found.max(axis=0) + 2
    box = tuple(slice(a, b) for a, b in zip(low, high))
    return tuple(np.pad(m[box], 1) for m in masks)


def structure_metrics(prediction: np.ndarray, reference: np.ndarray, spacing_kji, ignore=None) -> dict:
    """Dice, HD95, MSD (mm), surface Dice at 2 mm and volumes (ml) of one structure."""
    import torch
    from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                               compute_surface_dice)

    prediction, reference = prediction.astype(bool), reference.astype(bool)
    if ignore is not None:
        prediction, reference = prediction & ~ignore.astype(bool), reference & ~ignore.astype(bool)
    voxel_ml = float(np.prod(spacing_kji)) / 1000.0
    result = {"dice": dice(prediction, reference), "hd95_mm": math.nan, "msd_mm": math.nan,
              "surface_dice_2mm": math.nan, "volume_ml": prediction.sum() * voxel_ml,
              "reference_volume_ml": reference.sum() * voxel_ml}
    ref_ml = result["reference_volume_ml"]
    result["volume_error_pct"] = 100.0 * (result["volume_ml"] - ref_ml) / ref_ml if ref_ml else math.nan
    if prediction.any() and reference.any():  # surface distances need two surfaces
        p, r = (torch.from_numpy(m)[None, None].float() for m in _crop(prediction, reference))
        spacing = [float(s) for s in spacing_kji]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # MONAI's own deprecation notice
            result["hd95_mm"] = float(compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                                                 spacing=spacing))
            result["msd_mm"] = float(compute_average_surface_distance(p, r, include_background=True,
                                                                      symmetric=True, spacing=spacing))
            result["surface_dice_2mm"] = float(compute_surface_dice(
                p, r, class_thresholds=[SURFACE_TOLERANCE_MM], include_background=True, spacing=spacing,
                use_subvoxels=True))
    return {key: round(float(value), 4) for key, value in result.items()}
