"""The readers put the real CTs on the same grid as the reviewed reference lung masks."""
import json

import numpy as np
import pytest

from conftest import shared_data
from LungAutoSegLib.ct_reader import read_ct
from LungAutoSegLib.image_io import read_volume

CASES = ["lidc_0001_slab", "lidc_0002_slab", "lidc_0003_slab", "pyrad_lung1", "pyrad_lung2", "tseg_example_ct"]


@pytest.mark.parametrize("case", CASES)
def test_reference_masks_sit_on_the_ct_grid_with_right_on_the_right(case):
    folder = shared_data("reference", case)
    info = json.loads((folder / "case.json").read_text())
    ct = read_ct(shared_data(info["ct"])).volume
    right, left = read_volume(folder / "lung_r.nrrd"), read_volume(folder / "lung_l.nrrd")
    assert list(ct.shape_ijk) == info["geometry"]["size"]
    assert np.allclose(ct.ijk_to_lps, right.ijk_to_lps, atol=1e-3)
    assert np.allclose(ct.origin, info["geometry"]["origin"], atol=1e-3)
    voxel_ml = np.prod(ct.spacing) / 1000
    assert right.array.sum() * voxel_ml == pytest.approx(info["volume_ml"]["Lung_R"], abs=0.1)
    assert right.centroid_lps(right.array > 0)[0] < left.centroid_lps(left.array > 0)[0]  # right: -x
    assert np.median(ct.array[right.array > 0]) < -500  # the mask covers aerated lung in HU
