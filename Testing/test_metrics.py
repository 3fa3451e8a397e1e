"""Segmentation metrics in millimetres."""
import numpy as np
import pytest

from lungautoseg_train.metrics import structure_metrics


def test_metrics_in_millimetres_on_an_anisotropic_grid():
    reference = np.zeros((30, 40, 40), bool)
    reference[5:25, 10:30, 10:30] = True
    shifted = np.roll(reference, 2, axis=2)  # 2 columns of 0.5 mm = 1 mm to the side
    spacing = (3.0, 0.5, 0.5)  # (k, j, i)
    same = structure_metrics(reference, reference, spacing)
    assert same["dice"] == 1 and same["hd95_mm"] == 0 and same["surface_dice_2mm"] == 1
    moved = structure_metrics(shifted, reference, spacing)
    assert moved["dice"] == pytest.approx(0.9) and moved["hd95_mm"] == pytest.approx(1.0)
    assert moved["surface_dice_2mm"] == pytest.approx(1.0)  # within the 2 mm tolerance
    assert moved["volume_ml"] == pytest.approx(20 * 20 * 20 * 0.75 / 1000)
    empty = structure_metrics(np.zeros_like(reference), reference, spacing)
    assert empty["dice"] == 0 and np.isnan(empty["hd95_mm"]) and empty["volume_error_pct"] == -100
    ignore = np.zeros_like(reference)
    ignore[:, :, 28:] = True  # the shifted part is not scored
    assert structure_metrics(shifted, reference, spacing, ignore)["dice"] > moved["dice"]
