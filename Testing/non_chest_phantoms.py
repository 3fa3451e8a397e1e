"""CTs that are not chest CTs, for the plausibility checks: a head, an abdomen, a water phantom.

Each is an analytic object in LPS mm rendered on an axial grid (int16 HU), like the thorax
phantom; none holds a lung, so a lung segmentation on it must come with a warning.
"""
from __future__ import annotations

import numpy as np

import thorax_phantom as tp
from LungAutoSegLib.volume import Volume


def _points(grid: Volume) -> np.ndarray:
    return grid.voxel_centres_lps()


def _ellipsoid(p: np.ndarray, centre, semi) -> np.ndarray:
    return (((p - np.asarray(centre, float)) / np.asarray(semi, float)) ** 2).sum(axis=-1)


def _noisy(hu: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, 10, hu.shape)
    return np.clip(np.round(hu + noise), -1024, 3071).astype(np.int16)


def head_ct(seed: int = 0) -> Volume:
    """Skull (cortical bone) around brain, maxillary sinuses and nasal airway full of air."""
    grid = tp.make_grid((112, 128, 50), (2.0, 2.0, 4.0), centre=(0.0, 0.0, 0.0))
    p = _points(grid)
    hu = np.full(grid.array.shape, -1000.0)
    outer = _ellipsoid(p, (0, 0, 0), (75, 95, 105))
    hu[outer < 1] = 1200.0                                # skull
    hu[_ellipsoid(p, (0, 0, 0), (68, 88, 98)) < 1] = 35.0  # brain
    for side in (-1, 1):                                  # maxillary sinuses, low and in front
        hu[_ellipsoid(p, (side * 22, -60, -60), (14, 16, 18)) < 1] = -1000.0
    hu[_ellipsoid(p, (0, -80, -50), (6, 12, 25)) < 1] = -1000.0
    return grid.with_array(_noisy(hu, seed))


def abdomen_ct(seed: int = 3) -> Volume:
    """The thorax phantom's body below the diaphragm (liver, spine, fat), with bowel gas."""
    grid = tp.make_grid((128, 128, 40), (2.8, 2.8, 4.0), centre=(0.0, 15.0, -200.0))
    phantom = tp.render(tp.make_anatomy(seed), grid)
    assert not any(phantom.masks[name].any() for name in ("Lung_R", "Lung_L"))
    hu = phantom.ct.array.astype(np.float64)
    p = _points(grid)
    rng = np.random.default_rng(seed)
    for _ in range(6):  # gas in the bowel, where the thorax phantom's body holds soft tissue
        centre = (rng.uniform(-70, 70), rng.uniform(-40, 20), rng.uniform(-250, -150))
        hu[_ellipsoid(p, centre, rng.uniform(10, 25, 3)) < 1] = -950.0
    return grid.with_array(_noisy(hu, seed))


def water_phantom(seed: int = 0) -> Volume:
    """A 30 cm water cylinder on the couch axis with four 5 cm air inserts along its length."""
    grid = tp.make_grid((128, 128, 60), (2.6, 2.6, 3.0), centre=(0.0, 0.0, 0.0))
    p = _points(grid)
    radial = np.hypot(p[..., 0], p[..., 1])
    hu = np.where(radial < 150, 0.0, -1000.0)
    for x, y in ((-75, 0), (75, 0), (0, -75), (0, 75)):
        hu[np.hypot(p[..., 0] - x, p[..., 1] - y) < 25] = -1000.0
    return grid.with_array(_noisy(hu, seed))
